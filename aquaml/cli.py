"""The ``aquaml`` command: train, evaluate, plot and export without writing a script.

    aquaml train --env Pendulum-v1 --algo sac --steps 20000 --seed 1 [--ranks 6]
    aquaml eval runs/Pendulum-v1_sac --episodes 20
    aquaml plot runs/ -o curves.png --y eval/return_mean
    aquaml export runs/Pendulum-v1_sac -o pendulum_policy

``aquaml <command> --help`` documents every flag with its default. ``train --ranks K`` (K > 1)
starts itself under ``mpiexec -n K``; under ``srun``/``mpirun`` it picks up the ranks it was given.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any, Sequence

ALGOS = ("sac", "ppo")


class CLIError(Exception):
    """A bad flag or a request that cannot be carried out; printed as ``aquaml <cmd>: error: ...``."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths such as 256,256, got {text!r}") from None
    if not widths or min(widths) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive layer widths such as 256,256, got {text!r}")
    return widths


def _run_name(text: str) -> str:
    from aquaml.storage import check_run_name
    try:
        return check_run_name(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected one plain directory name (not empty, not '.' or '..', "
                                         f"no '/'), got {text!r}") from None


def _assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE (e.g. gamma=0.95), got {text!r}")
    return key.strip(), value.strip()


_GIVEN = "_given_once"


class _StoreOnce(argparse._StoreAction):
    """A flag with one value that may be given once: argparse would silently keep the last of two."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault(_GIVEN, {})
        if self.dest in given and option_string is not None:
            raise argparse.ArgumentError(self, f"given twice ({given[self.dest]} and {option_string} "
                                               f"{_shown(values)}); give it once")
        given[self.dest] = f"{option_string} {_shown(values)}"
        super().__call__(parser, namespace, values, option_string)


def _shown(values: Any) -> str:
    return ",".join(map(str, values)) if isinstance(values, tuple) else str(values)


def _subcommand(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand parser whose one-value flags are ``_StoreOnce``."""
    parser = sub.add_parser(name, allow_abbrev=False, **kwargs)
    parser.register("action", None, _StoreOnce)
    parser.register("action", "store", _StoreOnce)
    return parser


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every flag's help unless the help already says its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default is argparse.SUPPRESS or action.required \
                or isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction)) \
                or not action.option_strings:
            return text
        return f"{text} (default: {'none' if action.default is None else action.default})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aquaml", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,plot,export}")
    fmt = _HelpFormatter

    train = _subcommand(sub, "train", help="train SAC or PPO on a gymnasium environment", formatter_class=fmt)
    train.add_argument("--env", required=True, help="gymnasium environment id, e.g. Pendulum-v1 (required)")
    train.add_argument("--algo", choices=ALGOS, default="sac", help="algorithm")
    train.add_argument("--steps", type=_positive_int, default=100_000, help="environment steps in all")
    train.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    train.add_argument("--ranks", type=_positive_int, default=1,
                       help="MPI ranks (1 optimizer + K-1 workers); K > 1 relaunches under mpiexec")
    train.add_argument("--name", type=_run_name, default=None,
                       help="run name under --run-root, one directory name (default: <env>_<algo>)")
    train.add_argument("--run-root", default="runs", help="directory that holds runs")
    train.add_argument("--resume", action="store_true",
                       help="continue run --name from its newest valid checkpoint (start it if it has none)")
    train.add_argument("--checkpoint-interval", type=_non_negative_int, default=None,
                       help="steps between checkpoints; 0 = only at the end (default: a tenth of --steps)")
    train.add_argument("--trust-checkpoint", action="store_true",
                       help="with --resume: accept a checkpoint not signed with your key (copied from someone else, "
                            "another machine, or an older aquaml); its pickled environments can run any code")
    train.add_argument("--keep-checkpoints", type=_positive_int, default=3, help="newest checkpoints kept")
    train.add_argument("--no-checkpoint-buffer", action="store_true",
                       help="leave the replay buffer out of checkpoints (smaller; SAC resumes with an empty buffer)")
    train.add_argument("--hidden", type=_widths, default=None,
                       help="hidden layer widths of the default MLPs (default: 256,256 for sac, 64,64 for ppo)")
    train.add_argument("--learning-rate", type=float, default=None,
                       help="learning rate of every model (default: 3e-4)")
    train.add_argument("--eval-interval", type=_non_negative_int, default=None,
                       help="steps between evaluations, 0 = only at the end (default: the algorithm's)")
    train.add_argument("--eval-episodes", type=_positive_int, default=None,
                       help="episodes per evaluation (default: the algorithm's)")
    train.add_argument("--set", type=_assignment, action="append", default=[], metavar="FIELD=VALUE",
                       help="any other algorithm parameter (SACParameters/PPOParameters field), repeatable "
                            "(default: none)")
    train.add_argument("--threads", type=_positive_int, default=None,
                       help="TensorFlow threads of the optimizer, per pool (default: the cores not used by workers, at least 2)")
    train.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")
    train.add_argument("--quiet", action="store_true", help="no progress lines")

    ev = _subcommand(sub, "eval", help="evaluate a trained run's policy", formatter_class=fmt)
    ev.add_argument("run", help="run directory (or a policy export directory)")
    ev.add_argument("--episodes", type=_positive_int, default=20, help="episodes to run")
    ev.add_argument("--seed", type=_non_negative_int, default=0, help="episode k is reset with seed + k")
    ev.add_argument("--env", default=None, help="gymnasium id (default: the one the run was trained on)")
    ev.add_argument("--json", action="store_true", help="print the statistics as one JSON object")
    ev.add_argument("--trust-policy", action="store_true",
                    help="run the export's SavedModel even when it is not signed with your key (a SavedModel can "
                         "run any TensorFlow op); without it, such a policy of default models is rebuilt from its "
                         "weights and any other is refused")

    plot = _subcommand(sub, "plot", help="learning curves across seeds (seaborn)", formatter_class=fmt)
    plot.add_argument("paths", nargs="+", metavar="RUN_OR_DIR", help="run directories or directories holding runs")
    plot.add_argument("-o", "--output", required=True, help="image file (.png, .pdf or .svg) (required)")
    plot.add_argument("--y", default="eval/return_mean", help="progress.csv column to plot")
    plot.add_argument("--x", default="global_step", help="progress.csv column of the x axis")
    plot.add_argument("--points", type=_positive_int, default=200, help="points of the common x grid")
    plot.add_argument("--title", default=None, help="figure title")

    export = _subcommand(sub, "export", help="export a run's policy for deployment (SavedModel and .keras)",
                         formatter_class=fmt)
    export.add_argument("run", help="run directory")
    export.add_argument("-o", "--output", required=True, help="export directory to write (required)")
    export.add_argument("--checkpoint", default="latest",
                        help="'latest' (newest valid checkpoint), 'final' (the policy saved at the end of "
                             "training) or a checkpoint directory")
    return parser


# --- train -------------------------------------------------------------------------------------
def _parameters(algo_cls: type, args: argparse.Namespace) -> Any:
    """The algorithm's parameters from the flags; ``--set`` values are parsed by the field's type.
    An error the parameters class raises names the flag (or ``--set``) that gave the field."""
    cls = algo_cls.parameters_class
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {"total_steps": args.steps, "seed": args.seed}
    origin = {"total_steps": f"--steps {args.steps}", "seed": f"--seed {args.seed}"}
    if args.eval_interval is not None:
        values["eval_interval"] = args.eval_interval
        origin["eval_interval"] = f"--eval-interval {args.eval_interval}"
    if args.eval_episodes is not None:
        values["calculate_episodes"] = args.eval_episodes
        origin["calculate_episodes"] = f"--eval-episodes {args.eval_episodes}"
    for key, text in args.set:
        if key not in fields:
            raise CLIError(f"--set {key}: {cls.__name__} has no field {key!r}; fields: {', '.join(fields)}")
        if key in values:
            raise CLIError(f"--set {key} conflicts with a flag that sets {key} (or is given twice)")
        values[key] = _parse_value(key, text, fields[key])
        origin[key] = f"--set {key}={text}"
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        named = [flag for key, flag in origin.items() if re.search(rf"\b{key}\b", str(exc))]
        raise CLIError(f"{'; '.join(named)}: {exc}" if named else str(exc)) from None


def _parse_value(key: str, text: str, field: dataclasses.Field) -> Any:
    """``none`` -> None, true/false -> bool, then int, float, or the text, as the field's type
    allows; the parameters class then checks the value against the field with its usual message."""
    kind = str(field.type)
    lowered = text.lower()
    if lowered in ("none", "null"):
        if "None" not in kind:
            raise CLIError(f"--set {key}: this field cannot be none ({kind}), got {text!r}")
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    if kind == "bool":
        raise CLIError(f"--set {key}: expected true or false, got {text!r}")
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            continue
    if re.search(r"\b(int|float)\b", kind) and "str" not in kind:
        raise CLIError(f"--set {key}: expected a number{' or none' if 'None' in kind else ''}, got {text!r}")
    return text


def _mpiexec() -> str:
    candidates = [os.environ.get("AQUAML_MPIEXEC"), os.path.join(os.path.dirname(sys.executable), "mpiexec"),
                  shutil.which("mpiexec"), shutil.which("mpirun")]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise CLIError("--ranks > 1 needs mpiexec: install the MPI extra (pip install 'aquaml[mpi]') or set "
                   "AQUAML_MPIEXEC to your MPI launcher")


def default_run_name(args: argparse.Namespace) -> str:
    """``--name``, or ``<env>_<algo>`` with the ``/`` of a namespaced id (``ALE/Pong-v5``) made ``-``."""
    return args.name if args.name is not None else f"{args.env.replace('/', '-')}_{args.algo}"


def make_train_starter(cli: dict[str, Any]):
    """The RLTaskStarter a ``train`` command line describes (also rebuilt by ``export`` from config.json)."""
    from aquaml import PPO, SAC, RLTaskStarter
    from aquaml.run.checkpoint import CheckpointError
    from aquaml.models.defaults import default_models
    from aquaml.envs import GymnasiumEnv

    args = argparse.Namespace(**cli)
    algo_cls = {"sac": SAC, "ppo": PPO}[args.algo]
    params = _parameters(algo_cls, args)
    try:
        probe = GymnasiumEnv(args.env)
    except Exception as exc:  # noqa: BLE001  (gymnasium raises several kinds for a bad id)
        raise CLIError(f"--env {args.env}: cannot make this gymnasium environment ({type(exc).__name__}: {exc})") from None
    hidden = tuple(args.hidden) if args.hidden else None
    models = default_models(args.algo, probe.obs_info, probe.action_info, hidden, args.learning_rate)
    probe.close()
    try:
        return RLTaskStarter(env=args.env, model_class_dict=models, algo=algo_cls, algo_hyperparameter=params,
                             name=default_run_name(args), run_root=args.run_root,
                             optimizer_threads=args.threads, verbose=not args.quiet,
                             tensorboard=not args.no_tensorboard, checkpoint_interval=args.checkpoint_interval,
                             keep_checkpoints=args.keep_checkpoints, checkpoint_buffer=not args.no_checkpoint_buffer,
                             resume=args.resume, config_extra={"cli": cli},
                             trust_checkpoint=bool(cli.get("trust_checkpoint")))
    except (ValueError, TypeError, CheckpointError) as exc:  # SpecError and ModelContractError included
        raise CLIError(f"--env {args.env} --algo {args.algo}: {exc}") from None


def cmd_train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from aquaml.parallel.mpi import launched_ranks
    if args.resume and args.name is None:
        raise CLIError("--resume needs --name (the run to continue)")
    if args.ranks > 1:
        if launched_ranks() > 1:
            raise CLIError(f"--ranks {args.ranks} given, but this process was already started as one of "
                           f"{launched_ranks()} MPI ranks; drop --ranks when launching with srun/mpirun")
        rest = _without_ranks(list(argv))
        command = [_mpiexec(), "-n", str(args.ranks), sys.executable, "-m", "aquaml.cli"] + rest
        return subprocess.call(command)
    cli = {k: v for k, v in vars(args).items() if k not in ("command", "ranks")}
    cli["hidden"] = list(args.hidden) if args.hidden else None
    starter = make_train_starter(cli)
    starter.run()
    return 0


def _without_ranks(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--ranks":
            skip = True
            continue
        if item.startswith("--ranks="):
            continue
        out.append(item)
    return out


# --- eval / export -----------------------------------------------------------------------------
def _config(run: str) -> dict[str, Any]:
    path = os.path.join(run, "config.json")
    if not os.path.isfile(path):
        raise CLIError(f"{run} is not a run directory (no config.json)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cmd_eval(args: argparse.Namespace) -> int:
    from aquaml.envs import GymnasiumEnv
    from aquaml.run.export import POLICY_JSON, UntrustedPolicyError, load_policy
    from aquaml.acting.worker import evaluate

    if not os.path.isdir(args.run):
        raise CLIError(f"{args.run}: no such directory")
    is_export = os.path.isfile(os.path.join(args.run, POLICY_JSON))
    if not is_export and not os.path.isfile(os.path.join(args.run, "policy", POLICY_JSON)):
        raise CLIError(f"{args.run} holds no exported policy (runs write policy/ when training ends; for a run "
                       f"stopped early, first run: aquaml export {args.run} -o {os.path.join(args.run, 'policy')})")
    try:
        policy = load_policy(args.run, trust=args.trust_policy)
    except UntrustedPolicyError as exc:
        raise CLIError(str(exc)) from None
    if policy.source == "weights":
        print(f"{args.run}: not signed with your key, so its SavedModel was not run; acting with its actor "
              "rebuilt from policy.json and actor.weights.h5", file=sys.stderr)
    env_id = args.env or policy.env_id
    if env_id is None:
        raise CLIError(f"{args.run} was trained on an environment that is not a gymnasium id; pass --env ID")
    envs = [GymnasiumEnv(env_id) for _ in range(min(args.episodes, 10))]
    for env in envs:  # a recurrent policy's state travels as observation entries
        env.set_recurrent_info(policy.state_info)
    if envs[0].obs_info.select(policy.obs_info.names) != policy.obs_info:
        raise CLIError(f"--env {env_id}: its observations {envs[0].obs_info} do not fit the policy's {policy.obs_info}")
    stats = evaluate(envs, envs[0].obs_info, policy, args.episodes, seed=args.seed)
    if args.json:
        print(json.dumps(stats))
    else:
        print(f"{args.run} on {env_id}, {args.episodes} episodes (seeds {args.seed}..{args.seed + args.episodes - 1}):")
        print(f"  return {stats['eval/return_mean']:.2f} ± {stats['eval/return_std']:.2f} "
              f"(min {stats['eval/return_min']:.2f}, max {stats['eval/return_max']:.2f})")
        print(f"  length {stats['eval/length_mean']:.1f} ± {stats['eval/length_std']:.1f} "
              f"(min {stats['eval/length_min']:.0f}, max {stats['eval/length_max']:.0f})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from aquaml.run.checkpoint import CheckpointError, Checkpointer, load_variables_state
    from aquaml.run.export import export_policy

    config = _config(args.run)
    if args.checkpoint == "final":
        source = os.path.join(args.run, "policy")
        if not os.path.isdir(source):
            raise CLIError(f"{args.run} has no final policy (training did not finish); use --checkpoint latest")
        shutil.copytree(source, args.output, dirs_exist_ok=False)
        print(f"copied {source} to {args.output}")
        return 0
    if "cli" not in config:
        raise CLIError(f"{args.run} was not trained with 'aquaml train', so its model classes are not known here; "
                       "use --checkpoint final, or aquaml.export_policy(starter.algo, path) from your script")
    path = Checkpointer(args.run).latest() if args.checkpoint == "latest" else args.checkpoint
    if path is None:
        raise CLIError(f"{args.run} has no valid checkpoint")
    try:
        step = Checkpointer.verify(path)["step"]
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None
    arrays = Checkpointer.load_arrays(path)  # the variables alone: nothing from a pickle is needed to act
    cli = dict(config["cli"], quiet=True, resume=False)
    starter = make_train_starter(cli)
    try:
        load_variables_state(starter.algo.state_groups(), arrays)
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None
    export_policy(starter.algo, args.output, config.get("env_id"))
    print(f"exported {path} (step {step}) to {args.output}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from aquaml.plotting import plot_runs
    try:
        plot_runs(args.paths, args.output, y=args.y, x=args.x, points=args.points, title=args.title)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    print(f"wrote {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    vars(args).pop(_GIVEN, None)
    try:
        if args.command == "train":
            return cmd_train(args, argv)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "plot":
            return cmd_plot(args)
        return cmd_export(args)
    except CLIError as exc:
        parser.exit(2, f"aquaml {args.command}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
