"""Tutorial 5: imitation from an expert dataset: GAIL (and AMP) learn from a discriminator's reward.

    python tutorials/tutorial5.py                          # GAIL on SAC, Pendulum-v1, 30,000 steps
    python tutorials/tutorial5.py --algo amp               # AMP's style reward alone, 50,000 steps
    python tutorials/tutorial5.py --env CartPole-v1        # GAIL on PPO, CartPole-v1, 200,000 steps
    mpirun -n 3 python tutorials/tutorial5.py              # one optimizer rank and two worker ranks

Three steps: record an expert (here a scripted controller: an energy-shaping swing-up for the
pendulum, a balancing rule for the cart-pole) with ``record_policy``, save it to HDF5 with
``save_data``, and train on it with an algorithm that reads it (``expert=`` its path). The
environment's reward is not used for learning (``task_reward_weight=0``, GAIL's default): the
policy learns from the discriminator alone, and the run logs the environment's return to show how
well it copies the expert. The discriminator is a model like the critics: here the default MLP from
``default_models``, or write one (an RLBaseModel whose ``input_name`` is ``('obs', 'action')`` for
GAIL, ``('obs', 'next_obs')`` for AMP, returning ``(batch, 1)``).
"""
import argparse
import os

import numpy as np

import aquaml  # first: it sets TensorFlow's log level before TensorFlow loads
from aquaml import GymnasiumEnv, RLTaskStarter, record_policy, save_data


def pendulum_swing_up(obs, deterministic=True):
    """Pump energy in along the velocity until the pole can reach upright, then hold it there with a
    PD law once it is within about 45 degrees. Rows of ``obs['obs']`` = (cos, sin, velocity); torque in
    [-1, 1] (GymnasiumEnv scales it to [-2, 2])."""
    cos, sin, velocity = np.asarray(obs["obs"], np.float64).T
    angle = np.arctan2(sin, cos)  # 0 is upright
    energy = 0.5 * velocity ** 2 + 15.0 * cos  # with g = 10, l = 1, m = 1: 15 at rest upright
    pump = np.where(np.abs(velocity) < 1e-3, 1.0, 0.1 * (15.0 - energy) * velocity)
    hold = -(10.0 * angle + 2.0 * velocity) / 2.0
    return {"action": np.clip(np.where(cos > 0.7, hold, pump), -1.0, 1.0)[:, None].astype(np.float32)}


def cartpole_balance(obs, deterministic=True):
    """Push the cart towards where the pole falls, with a little centring of the cart: 500 (the
    time limit) on the episodes recorded here."""
    x, x_dot, theta, theta_dot = np.asarray(obs["obs"], np.float64).T
    return {"action": (theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0).astype(np.int64)}


EXPERTS = {"Pendulum-v1": pendulum_swing_up, "CartPole-v1": cartpole_balance}

#: The base algorithms' settings (tutorial 1's SAC, tutorial 3's PPO for the cart-pole).
PENDULUM_SAC = dict(learning_starts=1000, buffer_size=100_000, alpha_learning_rate=1e-3)
CARTPOLE_PPO = dict(envs_per_worker=8, rollout_steps=32, batch_size=256, update_epochs=20, gamma=0.98,
                    gae_lambda=0.8, anneal_lr=True, disc_batch_size=256)
STYLE_ONLY = dict(task_reward_weight=0.0, style_reward_weight=1.0)

#: Per (environment, method): the registered algorithm, its steps and parameters, the default models' width.
SETTINGS = {
    ("Pendulum-v1", "gail"): ("gail-sac", 30_000, PENDULUM_SAC, (256, 256)),
    ("Pendulum-v1", "amp"): ("amp-sac", 50_000, {**PENDULUM_SAC, **STYLE_ONLY}, (256, 256)),
    ("CartPole-v1", "gail"): ("gail-ppo", 200_000, CARTPOLE_PPO, (64, 64)),
    ("CartPole-v1", "amp"): ("amp-ppo", 200_000, {**CARTPOLE_PPO, **STYLE_ONLY}, (64, 64)),
}


def record_expert(env_id: str, episodes: int, path: str) -> float:
    """Record ``episodes`` episodes of the scripted expert on ``env_id`` into ``path``; returns their
    mean return. Every rank of an MPI launch records the same episodes and writes the same file
    (atomically), so each finds it complete before it reads it."""
    env = GymnasiumEnv(env_id)
    data = record_policy(env, EXPERTS[env_id], episodes=episodes, seed=100)
    save_data(path, data)
    env.close()
    return float(data.episode_returns().mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=["gail", "amp"], default="gail", help="GAIL or AMP (default gail)")
    parser.add_argument("--env", choices=sorted(EXPERTS), default="Pendulum-v1", help="task (default Pendulum-v1)")
    parser.add_argument("--episodes", type=int, default=10, help="expert episodes recorded (default 10)")
    parser.add_argument("--steps", type=int, default=None, help="environment steps (default: per task)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--expert", default=None, help="dataset file (default <run-root>/expert_<env>.h5)")
    parser.add_argument("--run-root", default="runs", help="directory that holds runs (default runs)")
    args = parser.parse_args(argv)

    os.makedirs(args.run_root, exist_ok=True)
    path = args.expert or os.path.join(args.run_root, f"expert_{args.env}.h5")
    expert_return = record_expert(args.env, args.episodes, path)
    algo, steps, parameters, hidden = SETTINGS[(args.env, args.algo)]
    steps = args.steps or steps
    env = GymnasiumEnv(args.env)
    params = aquaml.algorithm(algo).parameters_class(expert=path, total_steps=steps, seed=args.seed,
                                                     eval_interval=steps // 10, calculate_episodes=10, **parameters)
    models = aquaml.default_models(algo, env.obs_info, env.action_info, hidden)
    starter = RLTaskStarter(env=args.env, model_class_dict=models, algo=algo, algo_hyperparameter=params,
                            name=f"tutorial5_{algo}_{args.env}", run_root=args.run_root)
    result = starter.run()
    if result:  # under MPI only the optimizer rank (rank 0) evaluates
        print(f"expert return {expert_return:.1f}; {algo} (environment reward unused) "
              f"{result['eval/return_mean']:.1f}")
    return result


if __name__ == "__main__":
    main()
