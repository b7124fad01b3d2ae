"""What a study shows: a console row per finished trial, and a report in the study's directory.

``write_report`` writes ``best.json`` (the best trial's parameters, value, seed, run directory and
the ``aquaml train`` flags that repeat it), ``trials.csv`` (every trial: state, value, parameters,
seed, run directory, timings, error) and two figures: ``history.png`` (each trial's value and the
best so far) and ``importances.png`` (Optuna's parameter importances, PED-ANOVA). Every file is
written atomically. Figures use the Agg canvas, never pyplot.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any, Mapping

import optuna
from optuna.trial import TrialState

from aquaml.storage import atomic_path, write_text_atomic

COLUMNS = ("trial", "state", "value", "best", "group", "seconds")
_WIDTHS = (6, 9, 10, 10, 6, 8)


def print_header() -> None:
    print("  ".join(c.rjust(w) for c, w in zip(COLUMNS, _WIDTHS)) + "  params", flush=True)


def _number(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def print_row(row: Mapping[str, Any]) -> None:
    """One finished trial on the console (rows of several groups interleave, each whole)."""
    cells = [str(row["trial"]), row["state"], _number(row["value"]), _number(row["best"]), str(row["group"]),
             f"{row['seconds']:.1f}"]
    params = " ".join(f"{k}={_number(v) if isinstance(v, float) else v}" for k, v in row["params"].items())
    line = "  ".join(c.rjust(w) for c, w in zip(cells, _WIDTHS)) + "  " + params
    if row.get("error"):
        line += f"\n        error: {row['error'].splitlines()[0][:200]}"
    print(line, flush=True)


def load_study(storage: str, study_name: str) -> Any:
    """The study ``study_name`` in ``storage`` (a journal file or URL), for reading.

    Raises:
        ValueError: no such storage file or study.
    """
    from aquaml.tuning.study import is_url, open_storage
    if not is_url(storage) and not os.path.isfile(storage):
        raise ValueError(f"--storage {storage}: no such journal file")
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage, 20, 60, 0))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage, 20, 60, 0))]
        raise ValueError(f"--storage {storage} holds no study {study_name!r}; it holds: {', '.join(names) or 'none'}") \
            from None


def counts(trials: list) -> dict[str, int]:
    return {state.name.lower(): sum(1 for t in trials if t.state == state) for state in TrialState}


def best_entry(study: Any) -> dict[str, Any] | None:
    """The best completed trial as best.json gives it (None before any trial completed)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    run_dir = best.user_attrs.get("run_dir")
    entry = {"trial": best.number, "value": best.value, "params": best.params, "seed": best.user_attrs.get("seed"),
             "run_dir": run_dir}
    config = os.path.join(run_dir or "", "config.json")
    if run_dir and os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            cli = json.load(f).get("cli")
        if cli:
            entry["train_args"] = train_args(cli)
    return entry


def train_args(cli: Mapping[str, Any]) -> list[str]:
    """The ``aquaml train`` flags that train a trial's configuration again."""
    args = ["--env", cli["env"], "--algo", cli["algo"], "--steps", str(cli["steps"]), "--seed", str(cli["seed"])]
    if cli.get("hidden"):
        args += ["--hidden", ",".join(str(w) for w in cli["hidden"])]
    if cli.get("learning_rate") is not None:
        args += ["--learning-rate", repr(cli["learning_rate"])]
    for key, value in cli.get("set", []):
        args += ["--set", f"{key}={value}"]
    return args


def summarize(storage: str, study_name: str) -> dict[str, Any]:
    """The study's counts and best trial."""
    study = load_study(storage, study_name)
    trials = study.get_trials(deepcopy=False)
    return {"study": study_name, "storage": storage, "trials": counts(trials), "best": best_entry(study)}


def write_report(storage: str, study_name: str, out: str) -> dict[str, str]:
    """best.json, trials.csv, history.png and importances.png in ``out`` (the study's directory);
    their paths. Reads the study as it is now (other jobs may still be running trials).

    Raises:
        ValueError: no such storage or study.
    """
    study = load_study(storage, study_name)
    os.makedirs(out, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    paths = {"best": os.path.join(out, "best.json"), "trials": os.path.join(out, "trials.csv"),
             "history": os.path.join(out, "history.png"), "importances": os.path.join(out, "importances.png")}
    best = best_entry(study)
    write_text_atomic(paths["best"], json.dumps({"study": study_name, "storage": storage,
                                                 "trials": counts(trials), "best": best}, indent=2, default=str))
    _write_csv(study, paths["trials"])
    _plot_history(trials, paths["history"], study_name)
    note = _plot_importances(study, paths["importances"])
    if note is not None:
        del paths["importances"]
        print(f"[{study_name}] no importances figure: {note}", flush=True)
    print(f"[{study_name}] report: " + ", ".join(paths.values()), flush=True)
    return paths


def _write_csv(study: Any, path: str) -> None:
    frame = study.trials_dataframe(attrs=("number", "state", "value", "datetime_start", "datetime_complete",
                                          "duration", "params", "user_attrs"))
    frame["retry_of"] = [t.system_attrs.get("failed_trial") for t in study.get_trials(deepcopy=False)]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def _plot_history(trials: list, path: str, name: str) -> None:
    """Each finished trial's value by trial number (pruned ones at their last report) and the best so far."""
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    best, best_x, best_y = -math.inf, [], []
    for state, color in ((TrialState.COMPLETE, "tab:blue"), (TrialState.PRUNED, "tab:gray")):
        points = [(t.number, t.value) for t in trials if t.state == state and t.value is not None]
        if points:
            ax.scatter(*zip(*points), s=18, color=color, label=state.name.lower())
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and t.value is not None:
            best = max(best, t.value)
            best_x.append(t.number)
            best_y.append(best)
    if best_x:
        ax.step(best_x, best_y, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("final evaluation return")
    ax.set_title(f"{name}: optimization history")
    if best_x or any(t.state == TrialState.PRUNED for t in trials):
        ax.legend(loc="lower right")
    _save(fig, path)


def _plot_importances(study: Any, path: str) -> str | None:
    """Optuna's parameter importances as bars; the reason when they cannot be computed."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return f"{len(complete)} completed trial(s); importances need 2 or more"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError) as exc:
        return str(exc)
    if not importances:
        return "no parameter varied between the completed trials"
    names = list(importances)[::-1]
    fig = _figure(6, 1.5 + 0.4 * len(names))
    ax = fig.add_subplot()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (PED-ANOVA, normalised)")
    ax.set_title("parameter importances")
    _save(fig, path)
    return None
