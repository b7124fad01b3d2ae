"""The ``aquaml`` command: train, evaluate, plot and export without writing a script.

    aquaml train --env Pendulum-v1 --algo sac --steps 20000 --seed 1 [--ranks 6]
    aquaml train --env CartPole-v1 --algo dqn --steps 50000 --plot-every 5000
    aquaml eval runs/Pendulum-v1_sac --episodes 20
    aquaml eval runs/CartPole-v1_dqn --video cartpole.mp4
    aquaml plot runs/ -o curves.png --y eval/return_mean
    aquaml export runs/Pendulum-v1_sac -o pendulum_policy
    aquaml serve --port 5000                                 (Gymie's WebSocket API)
    aquaml serve-nats Pendulum-v1 --subject aquaml.pendulum  (NatsEnv clients)
    aquaml tune --env CartPole-v1 --algo ppo --space space.yaml --trials 50 --group-size 2 --storage runs/study.log

``aquaml <command> --help`` documents every flag with its default. ``train --ranks K`` (K > 1)
starts itself under ``mpiexec -n K``; under ``srun``/``mpirun`` it picks up the ranks it was given
(``tune`` likewise; its ranks form groups of ``--group-size``).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from typing import Any, Sequence

#: The progress.csv column ``--plot-every`` draws: the training episodes' mean return per epoch.
PLOT_COLUMN = "charts/episode_return"


class CLIError(Exception):
    """A bad flag or a request that cannot be carried out; printed as ``aquaml <cmd>: error: ...``.

    ``prints`` says whether this rank prints it: under an MPI launch an error that every rank
    finds alike (a bad flag) is printed by the first rank only.
    """

    def __init__(self, message: str, prints: bool | None = None) -> None:
        super().__init__(message)
        self.prints = _first_launched_rank() if prints is None else prints


def _first_launched_rank() -> bool:
    from aquaml.parallel.mpi import launched_rank, launched_ranks
    return launched_ranks() == 1 or launched_rank() == 0


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are printed by one rank of an MPI launch, not by each."""

    def error(self, message: str):
        if not _first_launched_rank():
            self.exit(2)
        super().error(message)


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
    parser = _Parser(prog="aquaml", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,plot,export,serve,serve-nats,tune}")
    fmt = _HelpFormatter

    train = _subcommand(sub, "train", help="train an algorithm on a gymnasium or remote environment",
                        formatter_class=fmt)
    train.add_argument("--env", required=True,
                       help="gymnasium environment id, e.g. Pendulum-v1, or a remote environment URL: "
                            "nats://host:port/SUBJECT (a serve-nats server; ?protocol=gym-nats for a gym-nats "
                            "system) or ws://host:port/gym?env=ID (a Gymie server) (required)")
    train.add_argument("--eval-env", default=None,
                       help="evaluation environment, same forms as --env (default: copies of --env)")
    train.add_argument("--algo", default="sac",
                       help="algorithm by its registered name: sac, ppo, dqn, or one that an --import module registers")
    train.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                       help="import MODULE first, e.g. one that calls aquaml.register_algorithm (repeatable) "
                            "(default: none)")
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
                       help="hidden layer widths of the default MLPs (default: 256,256 for sac and dqn, 64,64 for ppo)")
    train.add_argument("--learning-rate", type=float, default=None,
                       help="learning rate of every model (default: 3e-4; 1e-4 for dqn)")
    train.add_argument("--eval-interval", type=_non_negative_int, default=None,
                       help="steps between evaluations, 0 = only at the end (default: the algorithm's)")
    train.add_argument("--eval-episodes", type=_positive_int, default=None,
                       help="episodes per evaluation (default: the algorithm's)")
    train.add_argument("--expert", default=None, metavar="FILE",
                       help="expert dataset (an HDF5 file of aquaml.save_data) of an algorithm that learns from one "
                            "(gail-sac, gail-ppo, amp-sac, amp-ppo): its 'expert' parameter (default: none)")
    train.add_argument("--set", type=_assignment, action="append", default=[], metavar="FIELD=VALUE",
                       help="any other algorithm parameter (SACParameters/PPOParameters field), repeatable "
                            "(default: none)")
    train.add_argument("--plot-every", type=_non_negative_int, default=0, metavar="STEPS",
                       help="redraw <run>/curves.png (training return per epoch) every STEPS environment steps "
                            "while training; 0 = never")
    train.add_argument("--threads", type=_positive_int, default=None,
                       help="TensorFlow threads of the optimizer, per pool (default: the cores not used by workers, at least 2)")
    train.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")
    train.add_argument("--quiet", action="store_true", help="no progress lines")

    ev = _subcommand(sub, "eval", help="evaluate a trained run's policy", formatter_class=fmt)
    ev.add_argument("run", help="run directory (or a policy export directory)")
    ev.add_argument("--episodes", type=_positive_int, default=20, help="episodes to run")
    ev.add_argument("--seed", type=_non_negative_int, default=0, help="episode k is reset with seed + k")
    ev.add_argument("--env", default=None,
                    help="gymnasium id or environment URL (default: the one the run was trained on)")
    ev.add_argument("--json", action="store_true", help="print the statistics as one JSON object")
    ev.add_argument("--video", default=None, metavar="PATH",
                    help="also render deterministic episodes off-screen to PATH (.mp4 or .gif)")
    ev.add_argument("--video-episodes", type=_positive_int, default=1, help="episodes in the video")
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
    _add_serve_parsers(sub, fmt)
    _add_tune_parser(sub)
    return parser


def _add_serve_parsers(sub: Any, fmt: type) -> None:
    serve = sub.add_parser("serve", help="serve gymnasium environments over WebSocket with Gymie's API",
                           formatter_class=fmt, allow_abbrev=False)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind; not loopback needs --token-file")
    serve.add_argument("--port", type=_port, default=5000, help="TCP port (0: any free port)")
    serve.add_argument("--token-file", default=None,
                       help="file whose first line is the token clients must send (?token= or a Bearer header) "
                            "(default: none; also read from $AQUAML_SERVE_TOKEN)")
    serve.add_argument("--max-instances-per-connection", type=_positive_int, default=64,
                       help="instances one connection may hold")
    serve.add_argument("--max-instances", type=_positive_int, default=1024, help="instances over all connections")
    serve.add_argument("--max-message-bytes", type=_positive_int, default=1 << 20, help="largest message accepted")
    serve.add_argument("--allow", action="append", default=None, metavar="ENV_ID",
                       help="an environment id clients may make, repeatable (default: any registered id)")
    serve.add_argument("--quiet", action="store_true", help="no connection log on stderr")

    nats = sub.add_parser("serve-nats", help="serve an environment to NatsEnv clients over NATS",
                          formatter_class=fmt, allow_abbrev=False)
    nats.add_argument("env", help="gymnasium id (e.g. Pendulum-v1) or module:name of an RLBaseEnv class, "
                                  "instance or factory (the module must be importable)")
    nats.add_argument("--subject", default="aquaml.env", help="base subject the clients use")
    nats.add_argument("--url", default="nats://127.0.0.1:4222", help="NATS server")
    nats.add_argument("--session-timeout", type=_positive_float, default=10.0,
                      help="seconds without a message after which a client counts as gone")
    nats.add_argument("--heartbeat", type=_positive_float, default=1.0, help="ping interval asked of clients")
    nats.add_argument("--max-instances", type=_positive_int, default=256, help="instances over all sessions")
    nats.add_argument("--user", default=None, help="NATS user (with --password-file)")
    nats.add_argument("--password-file", default=None, help="file whose first line is the NATS password")
    nats.add_argument("--token-file", default=None, help="file whose first line is the NATS token")
    nats.add_argument("--nkey-seed", default=None, help="NKey seed file")
    nats.add_argument("--credentials", default=None, help="NATS .creds file (JWT and NKey)")
    nats.add_argument("--quiet", action="store_true", help="no session log on stderr")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _add_tune_parser(sub: Any) -> None:
    fmt = _HelpFormatter
    tune = sub.add_parser("tune", help="tune hyperparameters with Optuna, trials as MPI rank groups (docs/tuning.md)",
                          formatter_class=fmt, allow_abbrev=False)
    tune.add_argument("--storage", required=True,
                      help="journal file of the study (e.g. runs/study.log; shared filesystem, no server) or an "
                           "Optuna storage URL (required)")
    tune.add_argument("--study", default=None, help="study name (default: the journal file's name without extension)")
    tune.add_argument("--run-root", default="runs", help="trials run in <run-root>/<study>/trial_<n>")
    tune.add_argument("--report", action="store_true",
                      help="only write the report (best.json, trials.csv, figures) of the study as it is now")
    tune.add_argument("--env", default=None, help="gymnasium environment id (required unless --report)")
    tune.add_argument("--algo", default="sac",
                      help="algorithm by its registered name: sac, ppo, dqn, or one that an --import module registers")
    tune.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                      help="import MODULE first, e.g. one that calls aquaml.register_algorithm (repeatable) "
                           "(default: none)")
    tune.add_argument("--space", default=None, help="search space, a .yaml/.yml/.json file (required unless --report)")
    tune.add_argument("--trials", type=_positive_int, default=None,
                      help="trials to complete or prune, counted across restarts (required unless --report)")
    tune.add_argument("--group-size", type=_positive_int, default=1,
                      help="ranks per trial (1 optimizer + G-1 workers); the launch's ranks form K groups of G")
    tune.add_argument("--ranks", type=_positive_int, default=1, help="MPI ranks in all; > 1 relaunches under mpiexec")
    tune.add_argument("--pruner", choices=("median", "halving", "none"), default="median",
                      help="prune trials at evaluations (median, successive halving) or not")
    tune.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help="Optuna sampler")
    tune.add_argument("--steps", type=_positive_int, default=100_000, help="environment steps of every trial")
    tune.add_argument("--seed", type=_non_negative_int, default=0, help="study seed: trial n trains with seed + n")
    tune.add_argument("--set", type=_assignment, action="append", default=[], metavar="FIELD=VALUE",
                      help="fix an algorithm parameter for every trial, repeatable (default: none)")
    tune.add_argument("--expert", default=None, metavar="FILE",
                      help="fixed expert dataset of an algorithm that learns from one (as train's --expert; "
                           "default: none)")
    tune.add_argument("--hidden", type=_widths, default=None, help="fixed hidden widths of the default MLPs")
    tune.add_argument("--learning-rate", type=float, default=None, help="fixed learning rate of every model")
    tune.add_argument("--eval-interval", type=_non_negative_int, default=None,
                      help="steps between evaluations, each reported to the pruner (default: the algorithm's)")
    tune.add_argument("--eval-episodes", type=_positive_int, default=None, help="episodes per evaluation")
    tune.add_argument("--enqueue", action="append", default=[], metavar="JSON",
                      help="parameters to try first, as a JSON object, repeatable, once per study (default: none)")
    tune.add_argument("--sampler-startup", type=_non_negative_int, default=10,
                      help="TPE: random trials before it models the results")
    tune.add_argument("--pruner-startup", type=_non_negative_int, default=5,
                      help="median pruner: trials finished before it prunes")
    tune.add_argument("--pruner-warmup", type=_non_negative_int, default=0,
                      help="median pruner: steps of a trial before it may be pruned")
    tune.add_argument("--heartbeat", type=_positive_int, default=20, help="seconds between a running trial's heartbeats")
    tune.add_argument("--grace", type=_positive_int, default=60,
                      help="seconds without a heartbeat after which a trial counts as dead and is queued again")
    tune.add_argument("--max-retries", type=_non_negative_int, default=3,
                      help="how often a dead or stopped trial is queued again")
    tune.add_argument("--max-failures", type=_positive_int, default=None,
                      help="trials that raised after which the study stops (default: --trials)")
    tune.add_argument("--threads", type=_positive_int, default=None,
                      help="TensorFlow threads of each trial's optimizer (default: the node's cores shared out)")
    tune.add_argument("--checkpoint-interval", type=_non_negative_int, default=None,
                      help="steps between a trial's checkpoints (default: a tenth of --steps)")
    tune.add_argument("--no-checkpoint-buffer", action="store_true", help="leave SAC's replay buffer out of checkpoints")
    tune.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")
    tune.add_argument("--quiet", action="store_true", help="no console table")
    tune.add_argument("--verbose-trials", action="store_true", help="also print every trial's progress lines")


# --- train -------------------------------------------------------------------------------------
def _parameters(algo_cls: type, args: argparse.Namespace) -> Any:
    """The algorithm's parameters from the flags; ``--set`` values given as text are parsed by the
    field's type, other values (``aquaml tune``'s sampled ones) are taken as they are. An error
    the parameters class raises names the flag (or ``--set``) that gave the field."""
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
    if getattr(args, "expert", None) is not None:
        if "expert" not in fields:
            raise CLIError(f"--expert: {cls.__name__} learns from no expert dataset; algorithms that do: "
                           f"{', '.join(_expert_algorithms()) or 'none registered'}")
        values["expert"] = args.expert
        origin["expert"] = f"--expert {args.expert}"
    for key, text in args.set:
        if key not in fields:
            raise CLIError(f"--set {key}: {cls.__name__} has no field {key!r}; fields: {', '.join(fields)}")
        if key in values:
            raise CLIError(f"--set {key} conflicts with a flag that sets {key} (or is given twice)")
        values[key] = _parse_value(key, text, fields[key]) if isinstance(text, str) else text
        origin[key] = f"--set {key}={text}"
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        named = [flag for key, flag in origin.items() if re.search(rf"\b{key}\b", str(exc))]
        raise CLIError(f"{'; '.join(named)}: {exc}" if named else str(exc)) from None


def _expert_algorithms() -> list[str]:
    """The registered algorithms whose parameters have an ``expert`` dataset field."""
    from aquaml.algos.registry import algorithm, algorithm_names
    return [n for n in algorithm_names()
            if "expert" in {f.name for f in dataclasses.fields(algorithm(n).parameters_class)}]


def _parse_value(key: str, text: str, field: dataclasses.Field | None) -> Any:
    """``none`` -> None, true/false -> bool, then int, float, or the text, as the field's type
    allows (any of them for None: a tuning entry that is no parameter, checked by the space); the
    parameters class then checks the value against the field with its usual message."""
    kind = "None | bool | int | float | str" if field is None else str(field.type)
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
    """``--name``, or ``<env>_<algo>``: a URL by its host and subject, the ``/`` of a namespaced id
    (``ALE/Pong-v5``) made ``-`` (a run name is one directory name)."""
    from aquaml.envs.urls import is_env_url, url_name

    if args.name is not None:
        return args.name
    env = url_name(args.env) if is_env_url(args.env) else args.env.replace("/", "-")
    return f"{env}_{args.algo}"


def resolve_algorithm(name: str, imports: Sequence[str] = ()) -> type:
    """The algorithm class registered as ``name``, after importing each of ``imports`` (modules
    that may register algorithms of their own; found on ``sys.path`` or in the current directory)."""
    import importlib

    from aquaml.algos.registry import algorithm
    if imports and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise CLIError(f"--import {module}: {exc}") from None
    try:
        return algorithm(name)
    except ValueError as exc:
        raise CLIError(f"--algo {name}: {exc}") from None


def make_train_starter(cli: dict[str, Any], *, mpi_comm: Any = None, on_evaluation: Any = None,
                       abort_on_error: bool = True, config_extra: dict[str, Any] | None = None):
    """The RLTaskStarter a ``train`` command line describes (also rebuilt by ``export`` from config.json).

    ``aquaml tune`` builds each trial through it, on the trial's rank group (``mpi_comm``), with
    the ``on_evaluation`` and ``abort_on_error`` of RLTaskStarter and more config.json entries.
    """
    from aquaml import RLTaskStarter
    from aquaml.algos.registry import default_models
    from aquaml.envs.urls import is_env_url, make_env
    from aquaml.run.checkpoint import CheckpointError

    args = argparse.Namespace(**{"imports": [], **cli})  # a run from before --import has none
    algo_cls = resolve_algorithm(args.algo, args.imports)
    params = _parameters(algo_cls, args)
    try:
        probe = make_env(args.env)
    except Exception as exc:  # noqa: BLE001  (gymnasium and the network raise several kinds)
        kind = "environment URL" if is_env_url(args.env) else "gymnasium environment"
        raise CLIError(f"--env {args.env}: cannot make this {kind} ({type(exc).__name__}: {exc})") from None
    hidden = tuple(args.hidden) if args.hidden else None
    try:
        algo_cls.check_action_info(probe.action_info)
    except ValueError as exc:
        raise CLIError(f"--env {args.env} --algo {args.algo}: {exc}") from None
    try:
        models = default_models(algo_cls, probe.obs_info, probe.action_info, hidden, args.learning_rate, params)
    except NotImplementedError as exc:
        raise CLIError(f"--algo {args.algo}: {exc}") from None
    probe.close()
    eval_env = getattr(args, "eval_env", None)
    try:
        return RLTaskStarter(env=args.env, model_class_dict=models, algo=algo_cls, algo_hyperparameter=params,
                             eval_env=eval_env, name=default_run_name(args), run_root=args.run_root,
                             optimizer_threads=args.threads, verbose=not args.quiet,
                             tensorboard=not args.no_tensorboard, checkpoint_interval=args.checkpoint_interval,
                             keep_checkpoints=args.keep_checkpoints, checkpoint_buffer=not args.no_checkpoint_buffer,
                             resume=args.resume, config_extra={"cli": cli, **(config_extra or {})},
                             mpi_comm=mpi_comm, on_evaluation=on_evaluation, abort_on_error=abort_on_error,
                             trust_checkpoint=bool(cli.get("trust_checkpoint")))
    except (ValueError, TypeError, CheckpointError, ConnectionError, RuntimeError) as exc:  # SpecError,
        # ModelContractError, RemoteEnvError and StartupError included; a problem found by one rank of
        # an MPI task (see agree_to_start) is printed by that rank
        raise CLIError(f"--env {args.env} --algo {args.algo}: {exc}", getattr(exc, "aquaml_startup", None)) from None


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
        return _launch(command)
    cli = {k: v for k, v in vars(args).items() if k not in ("command", "ranks", "plot_every")}
    cli["hidden"] = list(args.hidden) if args.hidden else None
    starter = make_train_starter(cli)
    plotter = CurvePlotter(starter, args.plot_every) if args.plot_every and _first_launched_rank() else None
    try:
        starter.run()
    finally:
        if plotter is not None:
            plotter.stop()
    return 0


class CurvePlotter:
    """Keeps ``<run dir>/curves.png`` up to date while ``starter`` trains (``--plot-every``): a
    background thread reads progress.csv every few seconds and redraws the figure whenever the
    run has advanced ``every`` environment steps since the last drawing, and once at the end.
    A cluster node has no screen; the file can be watched from anywhere that sees the run."""

    POLL_SECONDS = 2.0

    def __init__(self, starter: Any, every: int) -> None:
        self.starter, self.every = starter, int(every)
        self.drawn_at = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aquaml-plot", daemon=True)
        self._thread.start()

    @property
    def path(self) -> str | None:
        return None if self.starter.run_dir is None else os.path.join(self.starter.run_dir, "curves.png")

    def _loop(self) -> None:
        while not self._stop.wait(self.POLL_SECONDS):
            self.draw(force=False)

    def draw(self, force: bool) -> bool:
        """Redraw when due (or ``force``); returns whether a figure was written."""
        from aquaml.plotting import plot_runs
        if self.path is None:
            return False
        steps = _last_step(self.starter.run_dir)
        if steps is None or (not force and steps < self.drawn_at + self.every):
            return False
        try:
            plot_runs([self.starter.run_dir], self.path, y=PLOT_COLUMN, title=f"{self.starter.name}: step {steps}")
        except ValueError:  # too few epochs with finished episodes to draw a curve yet
            return False
        self.drawn_at = steps
        return True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.draw(force=True)


def _last_step(run_dir: str) -> int | None:
    """The ``global_step`` of progress.csv's last row (None before the first)."""
    path = os.path.join(run_dir, "progress.csv")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return None
    if len(lines) < 2:
        return None
    header = lines[0].split(",")
    try:
        return int(float(lines[-1].split(",")[header.index("global_step")]))
    except (ValueError, IndexError):
        return None


def _launch(command: list[str]) -> int:
    """Run the MPI launcher and return its exit code, passing SIGTERM and SIGINT on to it once.

    The launcher gets a session of its own, so that a Ctrl-C in the terminal reaches it only
    through this process (twice would interrupt the ranks at once instead of at a clean point).
    """
    from aquaml.parallel.failure import DEFERRED
    held = DEFERRED.take()
    if held is not None:
        print(f"aquaml train: stopped by {held} before training started; nothing was written", flush=True)
        return 0
    child = subprocess.Popen(command, start_new_session=True)
    forward = lambda signum, frame: child.send_signal(signum)  # noqa: E731
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


# --- tune --------------------------------------------------------------------------------------
def _tune_fixed(args: argparse.Namespace) -> dict[str, Any]:
    """The fixed entries the flags give (``--set``, ``--expert``, ``--hidden``, ``--learning-rate``,
    ``--eval-*``); ``--set`` text is parsed by the field's type, unknown names are refused by the
    space check."""
    from aquaml.tuning.space import algorithm_parameters
    fields = {f.name: f for f in dataclasses.fields(algorithm_parameters(args.algo))}
    fixed: dict[str, Any] = {}
    for key, text in args.set:
        if key in fixed:
            raise CLIError(f"--set {key} is given twice")
        fixed[key] = _parse_value(key, text, fields.get(key))
    flags = (("eval_interval", "--eval-interval", args.eval_interval),
             ("calculate_episodes", "--eval-episodes", args.eval_episodes),
             ("expert", "--expert", args.expert),
             ("hidden", "--hidden", list(args.hidden) if args.hidden else None),
             ("learning_rate", "--learning-rate", args.learning_rate))
    for key, flag, value in flags:
        if value is not None:
            if key in fixed:
                raise CLIError(f"{flag} and --set {key} both set {key}; give one")
            fixed[key] = value
    return fixed


def _enqueued(texts: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for text in texts:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CLIError(f"--enqueue {text!r}: not valid JSON ({exc})") from None
        if not isinstance(values, dict):
            raise CLIError(f"--enqueue {text!r}: expected a JSON object of parameter values")
        out.append(values)
    return out


def _tune_config(args: argparse.Namespace) -> Any:
    """The TuneConfig the flags describe; every problem is a CLIError before any work starts."""
    from aquaml.tuning.config import make_config
    missing = [flag for flag, value in (("--env", args.env), ("--space", args.space), ("--trials", args.trials))
               if value is None]
    if missing:
        raise CLIError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required (unless --report)")
    try:
        return make_config(args.env, args.algo, args.space, args.trials, args.storage, args.study, _tune_fixed(args),
                           group_size=args.group_size, steps=args.steps, seed=args.seed, run_root=args.run_root,
                           pruner=args.pruner, sampler=args.sampler, enqueue=_enqueued(args.enqueue),
                           sampler_startup_trials=args.sampler_startup, pruner_startup_trials=args.pruner_startup,
                           pruner_warmup_steps=args.pruner_warmup, heartbeat_interval=args.heartbeat,
                           grace_period=args.grace, max_retries=args.max_retries, max_failures=args.max_failures,
                           threads=args.threads, tensorboard=not args.no_tensorboard,
                           checkpoint_interval=args.checkpoint_interval,
                           checkpoint_buffer=not args.no_checkpoint_buffer, verbose=not args.quiet,
                           trial_verbose=args.verbose_trials)
    except ValueError as exc:  # SpaceError included
        raise CLIError(str(exc)) from None


def cmd_tune(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import importlib.util
    if importlib.util.find_spec("optuna") is None:
        raise CLIError("tuning needs Optuna: pip install 'aquaml[tune]'")
    from aquaml.parallel.mpi import launched_ranks
    from aquaml.tuning.config import default_study_name
    if args.report:
        from aquaml.tuning.report import write_report
        try:
            name = args.study or default_study_name(args.storage)
            write_report(args.storage, name, os.path.join(args.run_root, name))
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        return 0
    resolve_algorithm(args.algo, args.imports)  # registers an --import module's algorithms in this process
    config = _tune_config(args)
    ranks = args.ranks if args.ranks > 1 else launched_ranks()
    if ranks % config.group_size:
        raise CLIError(f"--group-size {config.group_size} does not divide the {ranks} ranks; launch K x "
                       f"{config.group_size} ranks for K groups")
    if args.ranks > 1:
        if launched_ranks() > 1:
            raise CLIError(f"--ranks {args.ranks} given, but this process was already started as one of "
                           f"{launched_ranks()} MPI ranks; drop --ranks when launching with srun/mpirun")
        return subprocess.call([_mpiexec(), "-n", str(args.ranks), sys.executable, "-m", "aquaml.cli"]
                               + _without_ranks(list(argv)))
    from aquaml.tuning.groups import StudyOpenError, run_study
    try:
        run_study(config)
    except StudyOpenError as exc:
        raise CLIError(str(exc)) from None
    return 0


# --- eval / export -----------------------------------------------------------------------------
def _config(run: str) -> dict[str, Any]:
    path = os.path.join(run, "config.json")
    if not os.path.isfile(path):
        raise CLIError(f"{run} is not a run directory (no config.json)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cmd_eval(args: argparse.Namespace) -> int:
    from aquaml.envs.urls import make_env
    from aquaml.run.export import POLICY_JSON, UntrustedPolicyError, load_policy
    from aquaml.run.video import check_video_path, record_video
    from aquaml.acting.worker import evaluate

    if not os.path.isdir(args.run):
        raise CLIError(f"{args.run}: no such directory")
    if args.video is not None:
        try:
            check_video_path(args.video)
        except ValueError as exc:
            raise CLIError(f"--video: {exc}") from None
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
    try:
        first = make_env(env_id)
    except Exception as exc:  # noqa: BLE001  (gymnasium and the network raise several kinds)
        raise CLIError(f"--env {env_id}: cannot make this environment ({type(exc).__name__}: {exc})") from None
    envs = [first] + [copy.deepcopy(first) for _ in range(min(args.episodes, 10, first.max_copies or 10) - 1)]
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
    if args.video is not None:
        frames, returns = record_video(args.video, env_id, policy, args.video_episodes, args.seed, policy.state_info)
        if not args.json:
            print(f"  video {args.video}: {frames} frames of {args.video_episodes} episode(s), "
                  f"returns {', '.join(f'{r:.1f}' for r in returns)}")
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


# --- serve / serve-nats --------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from aquaml.envs.gymie_serve import serve
    from aquaml.envs.urls import read_secret
    try:
        token = read_secret(args.token_file, "--token-file") if args.token_file else \
            os.environ.get("AQUAML_SERVE_TOKEN") or None
        serve(args.host, args.port, token=token, max_instances_per_connection=args.max_instances_per_connection,
              max_instances=args.max_instances, max_message_bytes=args.max_message_bytes, allowed_envs=args.allow,
              verbose=not args.quiet)
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from None
    return 0


def _served_env(spec: str) -> Any:
    """A gymnasium id, or ``module:name`` of an RLBaseEnv class, instance or factory."""
    import importlib
    module_name, sep, attr = spec.partition(":")
    if not sep:
        from aquaml.envs import GymnasiumEnv
        try:
            GymnasiumEnv(spec).close()
        except Exception as exc:  # noqa: BLE001  (gymnasium raises several kinds for a bad id)
            raise CLIError(f"{spec}: cannot make this gymnasium environment ({type(exc).__name__}: {exc})") from None
        return spec
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise CLIError(f"{spec}: cannot import {attr!r} from {module_name!r} ({exc})") from None
    return target


def cmd_serve_nats(args: argparse.Namespace) -> int:
    from aquaml.envs.nats_serve import serve_nats
    from aquaml.envs.urls import read_secret
    env = _served_env(args.env)
    try:
        auth = {"user": args.user, "nkey_seed": args.nkey_seed, "credentials": args.credentials,
                "password": read_secret(args.password_file, "--password-file") if args.password_file else None,
                "token": read_secret(args.token_file, "--token-file") if args.token_file else None}
        serve_nats(env, args.subject, args.url, session_timeout=args.session_timeout, heartbeat=args.heartbeat,
                   max_instances=args.max_instances, verbose=not args.quiet, **auth)
    except (ValueError, TypeError, OSError, PermissionError, ConnectionError) as exc:
        raise CLIError(str(exc)) from None
    return 0


_COMMANDS = {"eval": cmd_eval, "plot": cmd_plot, "export": cmd_export, "serve": cmd_serve,
             "serve-nats": cmd_serve_nats}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    vars(args).pop(_GIVEN, None)
    try:
        if args.command == "train":
            return cmd_train(args, argv)
        if args.command == "tune":
            return cmd_tune(args, argv)
        return _COMMANDS[args.command](args)
    except CLIError as exc:
        parser.exit(2, f"aquaml {args.command}: error: {exc}\n" if exc.prints else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
