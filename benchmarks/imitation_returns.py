"""Imitation from expert datasets: GAIL on PPO (CartPole-v1), GAIL on SAC (Pendulum-v1), AMP's style
reward alone on SAC (Pendulum-v1), and behaviour cloning from the same datasets, each beside the
expert's return.

    python benchmarks/imitation_returns.py                          # every figure, seeds 0 1 2
    python benchmarks/imitation_returns.py --only gail-sac bc --seeds 0
    python benchmarks/imitation_returns.py --jobs 1 --run-root /tmp/imitation

The experts are the scripted controllers of ``tutorials/tutorial5.py`` (a balancing rule for the
cart-pole, an energy-shaping swing-up for the pendulum), and every run uses that tutorial's settings
(tutorial 1's SAC, tutorial 3's PPO; the default models), recorded for 10 episodes (resets seeded
100..109) into one HDF5 file per task; the 2-episode figures use the first two episodes of the same
file (``expert_episodes=2``). No figure's learner sees the environment's reward
(``task_reward_weight=0``); the environment's return is only measured. Every return is the mean of
10 deterministic evaluation episodes at the end of training (episode seeds fixed per run seed).
Behaviour cloning trains the algorithm's default actor (the same network the imitation run trains)
with ``aquaml.behaviour_cloning`` and evaluates it the same way. Each run is its own process
(``--jobs`` at once, one TensorFlow thread each). Targets (the issue's):

    GAIL-PPO CartPole-v1, 10 episodes, 200k steps, 3 seeds      >= 475
    GAIL-SAC Pendulum-v1, 10 episodes, 30k steps, 3 seeds       >= -250
    AMP-SAC (style reward only) Pendulum-v1, 50k steps           >= -300
    behaviour cloning, 10 and 2 episodes                         reported (GAIL should beat it at 2)
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import multiprocessing
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tutorials"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EVAL_EPISODES = 10
EXPERT_EPISODES = 10
#: figure -> (tutorial5's settings, target of the 10-episode figure)
FIGURES = {"gail-ppo": (("CartPole-v1", "gail"), 475.0), "gail-sac": (("Pendulum-v1", "gail"), -250.0),
           "amp-sac": (("Pendulum-v1", "amp"), -300.0)}
#: behaviour cloning: environment -> (the algorithm whose default actor is cloned, epochs, tanh squashing)
CLONING = {"CartPole-v1": ("gail-ppo", 200, False), "Pendulum-v1": ("gail-sac", 200, True)}


def record_experts(run_root: str) -> dict[str, dict]:
    """Each task's expert dataset file and the mean return of its first 10 and first 2 episodes."""
    import tutorial5
    from aquaml import load_data
    out = {}
    for env_id in ("CartPole-v1", "Pendulum-v1"):
        path = os.path.join(run_root, f"expert_{env_id}.h5")
        tutorial5.record_expert(env_id, EXPERT_EPISODES, path)
        returns = load_data(path).episode_returns()
        out[env_id] = {"path": path, "return_10": float(returns.mean()), "return_2": float(returns[:2].mean())}
    return out


def imitation_run(figure: str, expert: str, episodes: int, seed: int, run_root: str) -> dict:
    """One imitation run in this process; returns its final evaluation return and wall time."""
    import tutorial5
    import aquaml
    from aquaml import GymnasiumEnv, RLTaskStarter
    env_id = FIGURES[figure][0][0]
    algo, steps, parameters, hidden = tutorial5.SETTINGS[FIGURES[figure][0]]
    env = GymnasiumEnv(env_id)
    params = aquaml.algorithm(algo).parameters_class(
        expert=expert, expert_episodes=episodes, total_steps=steps, seed=seed, eval_interval=0,
        calculate_episodes=EVAL_EPISODES, **parameters)
    starter = RLTaskStarter(env_id, aquaml.default_models(algo, env.obs_info, env.action_info, hidden), algo=algo,
                            algo_hyperparameter=params, name=f"{figure}_{episodes}ep_seed{seed}", run_root=run_root,
                            optimizer_threads=1, verbose=False, tensorboard=False, checkpoint_interval=0)
    t0 = time.perf_counter()
    final = starter.run()
    return {"return": final["eval/return_mean"], "wall_s": time.perf_counter() - t0}


def cloning_run(env_id: str, expert: str, episodes: int, seed: int) -> dict:
    """Behaviour cloning of the default actor on the first ``episodes`` episodes, then the same
    deterministic evaluation as the imitation runs (episode seeds ``seed + 1_000_003 + k``)."""
    import keras
    import numpy as np
    import tensorflow as tf
    import aquaml
    from aquaml import GymnasiumEnv, behaviour_cloning, load_data
    from aquaml.acting.worker import evaluate
    from aquaml.algos.imitation.discriminator import first_episodes
    from aquaml.parallel.devices import limit_tf_threads
    limit_tf_threads(1, 1)
    algo, epochs, squash = CLONING[env_id]
    env = GymnasiumEnv(env_id)
    keras.utils.set_random_seed(seed)
    actor = aquaml.default_models(algo, env.obs_info, env.action_info)["actor"]()
    data = first_episodes(load_data(expert, env.obs_info, env.action_info), episodes, expert)
    t0 = time.perf_counter()
    metrics = behaviour_cloning(actor, data, epochs=epochs, batch_size=64, seed=seed, validation_fraction=0.0)
    act = tf.function(lambda obs: actor(obs)[0])
    if squash:
        policy = lambda obs, det: {"action": np.tanh(act(tf.constant(obs["obs"])).numpy())}  # noqa: E731
    else:
        policy = lambda obs, det: {"action": np.argmax(act(tf.constant(obs["obs"])).numpy(), axis=-1)}  # noqa: E731
    envs = [GymnasiumEnv(env_id) for _ in range(EVAL_EPISODES)]
    result = evaluate(envs, env.obs_info, policy, EVAL_EPISODES, seed=seed + 1_000_003)
    return {"return": result["eval/return_mean"], "wall_s": time.perf_counter() - t0,
            "train_loss": metrics["bc/train_loss"]}


def _job(kind: str, args: tuple) -> tuple[str, tuple, dict]:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return kind, args, (imitation_run(*args) if kind == "imitation" else cloning_run(*args))


def commit() -> str:
    """The checked-out commit, with ``+changes`` when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(FIGURES) + ["bc"], default=sorted(FIGURES) + ["bc"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, nargs="+", default=[10, 2], help="expert episodes used")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2, one per core here)")
    parser.add_argument("--run-root", default="/tmp/aquaml_imitation_returns")
    args = parser.parse_args()
    os.makedirs(args.run_root, exist_ok=True)
    revision = commit()
    experts = record_experts(args.run_root)
    jobs = []
    for figure in (f for f in args.only if f != "bc"):
        env_id = FIGURES[figure][0][0]
        episodes = [10] if figure == "amp-sac" else args.episodes
        jobs += [("imitation", (figure, experts[env_id]["path"], n, s, args.run_root))
                 for n in episodes for s in args.seeds]
    if "bc" in args.only:
        jobs += [("cloning", (env_id, experts[env_id]["path"], n, s))
                 for env_id in CLONING for n in args.episodes for s in args.seeds]
    context = multiprocessing.get_context("spawn")  # a fresh TensorFlow per run
    results: dict[tuple, list] = {}
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        for kind, job, result in pool.map(_job, [k for k, _ in jobs], [a for _, a in jobs]):
            label = (job[0], FIGURES[job[0]][0][0], job[2]) if kind == "imitation" else ("bc", job[0], job[2])
            results.setdefault(label, []).append(result)
            print(f"{label[0]} {label[1]} episodes={label[2]} seed={job[3]} return={result['return']:.1f} "
                  f"wall_s={result['wall_s']:.0f}", flush=True)
    report(results, experts, args, revision)


def report(results: dict, experts: dict, args: argparse.Namespace, revision: str) -> None:
    """Print every figure beside its expert's return, and write them to ``results.json``."""
    import numpy as np
    print(f"\nimitation_returns {datetime.date.today().isoformat()} commit {revision} seeds {args.seeds} "
          f"({args.jobs} runs at once)")
    rows = []
    for (label, env_id, episodes), found in sorted(results.items()):
        returns = [r["return"] for r in found]
        target = FIGURES[label][1] if label in FIGURES and episodes == 10 else None
        mean = float(np.mean(returns))
        verdict = "" if target is None else f" target >= {target:g}: " + (
            "met by every seed" if min(returns) >= target else "met by the mean" if mean >= target else "NOT met")
        expert = experts[env_id].get(f"return_{episodes}", float("nan"))
        print(f"{label:>8} {env_id:<12} {episodes:>2} episodes: mean {mean:8.1f} per seed "
              f"{[round(r, 1) for r in returns]} | expert {expert:.1f}{verdict}")
        rows.append({"figure": label, "env": env_id, "episodes": episodes, "returns": returns, "mean": mean,
                     "expert": expert, "target": target})
    with open(os.path.join(args.run_root, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"date": datetime.date.today().isoformat(), "commit": revision, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
