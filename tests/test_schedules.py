"""The schedules in-process: the same learner and actor classes the MPI ranks run, driven in one
process over local links, with a numpy stand-in algorithm whose every call is recorded."""
import numpy as np
import pytest

from helpers import CountingEnv

from aquaml.algos.base import OffPolicyAlgorithm, OnPolicyAlgorithm
from aquaml.algos.params import ReplayParameters, RolloutParameters
from aquaml.buffers.replay import ReplayBuffer
from aquaml.buffers.rollout import RolloutBuffer
from aquaml.data import DataInfo
from aquaml.parallel.failure import StopRequest
from aquaml.schedules.async_replay import ReplayActor, ReplayLearner
from aquaml.schedules.context import TaskContext
from aquaml.schedules.drivers import make_actor, make_learner, run_serial
from aquaml.schedules.local import LocalLink
from aquaml.schedules.marks import STOP_MARK
from aquaml.schedules.rate import ReplayRatio

OBS = DataInfo("obs", (1,), np.float32)
ACTION = DataInfo("action", (1,), np.float32)
ROWS = (OBS.merge(OBS.prefixed("next_")).merge(ACTION)
        .add_info(("reward", "terminated", "truncated"), ((), (), ()), np.float32))


class _Fake:
    """What the schedules call on an algorithm, recorded; no TensorFlow."""
    metric_names = ("losses/x",)
    console_metrics = ()

    def __init__(self, params):
        self.params, self.obs_info, self.action_info, self.batch_info = params, OBS, ACTION, ROWS
        self.calls, self.weights = [], np.zeros(3, np.float32)

    def act(self, obs, deterministic=False):
        self.calls.append(("act", len(obs["obs"])))
        return {"action": np.full((len(obs["obs"]), 1), 0.25, np.float32)}

    def actor_weights(self):
        return [self.weights]

    def actor_weight_variables(self):
        return []


class FakeOffPolicy(_Fake, OffPolicyAlgorithm):
    def __init__(self, params):
        super().__init__(params)

    def make_buffer(self, num_slices=1, store=None):
        return ReplayBuffer(ROWS, 10_000, num_slices, store)

    def sample_many(self, buffer, rng, count):
        batch = buffer.sample(4 * count, rng)
        return {k: v.reshape((count, 4) + v.shape[1:]) for k, v in batch.items()}

    def update_many(self, batches):
        count = len(batches["reward"])
        self.calls.append(("update_many", count))
        self.weights += count
        return np.ones((count, 1)), self.weights.copy()

    def update_and_act(self, batch, obs):
        self.calls.append(("update_and_act", 1))
        self.weights += 1
        return np.ones(1), {"action": np.full((len(obs["obs"]), 1), 0.75, np.float32)}

    # unused by the schedules
    check_action_info = staticmethod(lambda info: None)
    export_act = host_policy = state_groups = save = None


class FakeOnPolicy(_Fake, OnPolicyAlgorithm):
    def __init__(self, params):
        super().__init__(params)

    def make_buffer(self, num_slices=1, store=None):
        return RolloutBuffer(ROWS, self.params.rollout_steps, self.params.envs_per_worker, num_slices, store)

    def train(self, segments):
        self.calls.append(("train", segments["reward"].shape))
        self.weights += 1
        return np.ones(1)

    def host_policy(self, seed):
        return _Synced(self)

    check_action_info = staticmethod(lambda info: None)
    export_act = state_groups = save = update = None


class _Synced:
    """A host policy stand-in: records when it takes the learner's weights."""
    rng = np.random.default_rng(0)

    def __init__(self, algo):
        self.algo, self.synced = algo, []

    def sync(self):
        self.synced.append(float(self.algo.weights[0]))

    def __call__(self, obs, deterministic=False):
        return {"action": np.zeros((len(obs["obs"]), 1), np.float32)}


class Progress:
    def __init__(self):
        self.rows, self.metrics, self.episodes, self.final = [], 0, 0, {}

    def add_metrics(self, m):
        self.metrics += len(np.atleast_2d(m))

    def add_episodes(self, episodes):
        self.episodes += len(episodes)

    def advance(self, steps, updates, finished=False):
        self.rows.append((steps, updates, finished))


class Sink:
    def __init__(self):
        self.saved = []

    def save(self, step, learner, workers, buffer, counts=None):
        self.saved.append((step, dict(learner), [w and w["worker"]["steps"] for w in workers]))


class ActionLog(CountingEnv):
    """Records every action it receives; can request a stop at a given step."""

    def __init__(self, stop_at=None, stop=None):
        super().__init__(horizon=7)
        self.actions, self.stop_at, self.stop = [], stop_at, stop

    def step(self, action_dict):
        self.actions.append(float(action_dict["action"][0]))
        if self.steps_taken + 1 == self.stop_at:
            self.stop.request("a test")
        return super().step(action_dict)


def task(algo, params, env, stop=None, interval=0):
    stop = stop or StopRequest()
    ctx = TaskContext(algo=algo, params=params, envs=[env], obs_info=OBS, action_info=ACTION, stop=stop,
                      progress=Progress(), checkpoints=Sink(), checkpoint_interval=interval, verbose=False)
    link = LocalLink(algo.make_buffer())
    actor = make_actor(ctx, link)
    return ctx, make_learner(ctx, link), actor


def test_one_process_replay_holds_the_ratio_in_bursts_and_fuses_the_last_update_with_the_next_action():
    p = ReplayParameters(total_steps=60, learning_starts=10, replay_ratio=0.5, update_interval=3, updates_per_call=2,
                         epoch_length=20, eval_interval=0)
    env, algo = ActionLog(), FakeOffPolicy(p)
    ctx, learner, actor = task(algo, p, env, interval=20)
    stop = ctx.stop
    run_serial(learner, actor)
    stop.restore()
    assert learner.updates == ReplayRatio(0.5, 10).updates_allowed(60) == 25
    # bursts at steps 10, 13, 16, ...: calls of at most 2 updates, the last one of each burst fused
    # with the next action (1 update per 2 steps, 1.5 per burst of 3 steps)
    fused = [c for c in algo.calls if c[0] == "update_and_act"]
    assert all(count <= 2 for kind, count in algo.calls if kind == "update_many")
    assert sum(count for kind, count in algo.calls if kind in ("update_many", "update_and_act")) == 25
    assert len(fused) == len([s for s in range(13, 60, 3)])  # every burst before the last step acts
    # warm-up steps are random, then every action comes from the policy or from a fused update
    assert set(env.actions[10:]) <= {0.25, 0.75} and env.actions.count(0.75) == len(fused)
    assert [s for s, _, _ in ctx.checkpoints.saved] == [20, 40, 60]
    assert ctx.progress.rows[-1] == (60, 25, True) and ctx.progress.metrics == 25


@pytest.mark.filterwarnings("ignore:ActionLog cannot be pickled")
def test_one_process_replay_stop_checkpoints_where_it_stopped():
    p = ReplayParameters(total_steps=200, learning_starts=10, epoch_length=50, eval_interval=0)
    stop = StopRequest()
    env = ActionLog(stop_at=77, stop=stop)
    ctx, learner, actor = task(FakeOffPolicy(p), p, env, stop=stop, interval=50)
    run_serial(learner, actor)
    stop.restore()
    step, state, workers = ctx.checkpoints.saved[-1]
    assert [s for s, _, _ in ctx.checkpoints.saved] == [50, 77] and workers == [77]
    assert state["updates"] == learner.updates and learner.link.snapshots()[0][0] == STOP_MARK
    assert not ctx.progress.rows[-1][2]  # no final evaluation after a stop


class TwoActors:
    """Two actors' ends and a learner's end in one process; actor 1 steps only every third turn."""
    shares_weights = True

    def __init__(self, buffer):
        self.buffer, self.sink, self.num_workers = buffer, buffer, 2
        self.updates_seen, self.snaps, self.done, self.stop = 0, {}, np.zeros(2, bool), False

    def end(self, index):
        link = self

        class End:
            shares_weights, num_workers, sink = True, 2, link.buffer

            def __init__(self):
                self.index, self.rank = index, index + 1

            restore_state = staticmethod(lambda: None)
            poll = flush = staticmethod(lambda: None)
            waiting = staticmethod(lambda flag: None)
            updates = staticmethod(lambda: link.updates_seen)
            stopping = staticmethod(lambda: link.stop)
            newer_weights = staticmethod(lambda v: (1, None) if v == 0 else None)
            record_episodes = staticmethod(lambda episodes: None)

            def send_snapshot(self, mark, state):
                link.snaps[index] = (mark, state)

            def finish(self):
                link.done[index] = True
        return End()

    start = poll = staticmethod(lambda *a: None)
    restore_workers = staticmethod(lambda states: None)

    def snapshots(self):
        return self.snaps

    def finished(self):
        return self.done

    def set_updates(self, updates):
        self.updates_seen = updates

    def publish(self, flat, version=None):
        return 1

    def wait_until(self, ready, finished):
        assert ready()

    def stop_workers(self):
        self.stop = True


@pytest.mark.parametrize("ratio,lead", [(0.01, 0), (0.05, 2), (1.0, 0), (4.0, 3)])
def test_two_unequal_actors_never_wait_on_each_other_forever_and_keep_within_their_lead(ratio, lead):
    p = ReplayParameters(total_steps=400, learning_starts=50, replay_ratio=ratio, max_worker_lead=lead,
                         epoch_length=100, eval_interval=0)
    algo = FakeOffPolicy(p)
    link = TwoActors(algo.make_buffer(2))
    ctx = TaskContext(algo=algo, params=p, envs=[CountingEnv()], obs_info=OBS, action_info=ACTION,
                      stop=StopRequest(), progress=Progress(), checkpoints=Sink(), verbose=False)
    actors = [ReplayActor(TaskContext(**{**ctx.__dict__, "envs": [CountingEnv()]}), link.end(w), _Live(algo))
              for w in range(2)]
    learner = ReplayLearner(ctx, link)
    learner.start()
    for a in actors:
        a.start()
    turns = 0
    while learner.running():
        turns += 1
        assert turns < 10_000, "the schedule stalled"
        for w, a in enumerate(actors):
            if w == 1 and turns % 3:
                continue
            if a.running():
                a.work()
                allowed = learner.rate.steps_allowed(learner.updates, 2)
                assert a.worker.steps <= max(allowed, a.warmup + 1)
            elif not link.done[w]:
                a.finish()
        learner.work()
    ctx.stop.restore()
    learner.finish()
    assert [a.worker.steps for a in actors] == [200, 200]
    assert learner.updates == ReplayRatio(ratio, 50).updates_allowed(400)


class _Live:
    rng = None

    def __init__(self, algo):
        self.algo = algo

    def sync(self):
        pass

    def state_dict(self):
        return {}

    def __call__(self, obs, deterministic=False):
        return self.algo.act(obs)


def test_one_process_rollouts_train_once_per_complete_round_on_that_rounds_weights():
    p = RolloutParameters(total_steps=100, rollout_steps=10, envs_per_worker=1, eval_interval=0)
    algo = FakeOnPolicy(p)
    ctx, learner, actor = task(algo, p, CountingEnv(), interval=30)
    run_serial(learner, actor)
    ctx.stop.restore()
    assert [c for c in algo.calls if c[0] == "train"] == [("train", (1, 10, 1))] * 10
    assert actor.policy.synced == [float(k) for k in range(10)]  # round k acts on the weights after k rounds
    assert [s for s, _, _ in ctx.checkpoints.saved] == [30, 60, 90, 100]
    assert ctx.progress.rows[-1] == (100, 10, True)


@pytest.mark.filterwarnings("ignore:ActionLog cannot be pickled")
def test_one_process_rollouts_stopped_mid_round_keep_the_last_trained_round():
    p = RolloutParameters(total_steps=100, rollout_steps=10, envs_per_worker=1, eval_interval=0)
    stop = StopRequest()
    ctx, learner, actor = task(FakeOnPolicy(p), p, ActionLog(stop_at=35, stop=stop), stop=stop, interval=0)
    run_serial(learner, actor)
    stop.restore()
    assert [(s, w) for s, _, w in ctx.checkpoints.saved] == [(30, [30])]
    assert actor.worker.steps == 35  # the round in progress is redone on resume
