"""Learning-curve plots across seeds: the mean return of each experiment with a confidence band.

A training run leaves ``runs/<name>/`` (repeats as ``runs/<name>-2``, ``-3``...) holding
``progress.csv`` (one row per epoch; an empty cell means "not measured this row") and
``config.json`` (``{"name": ..., "algo": ..., "parameters": {"seed": ...}}``). Runs of one
experiment rarely log at the same steps (evaluation every few epochs, different batch sizes), so
each run is interpolated onto one common step grid per experiment before averaging; otherwise the
mean and the band at a given step would be taken over different subsets of runs.

Typical use::

    from aquaml.plotting import plot_runs
    plot_runs(["runs/"], "returns.png")                       # every run found under runs/
    plot_runs(["runs/sac_a", "runs/sac_a-2"], "a.pdf", y="charts/episode_return")

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas, never through pyplot,
so plotting changes no global matplotlib state and works without a display.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from aquaml.storage import atomic_path

PROGRESS_FILE = "progress.csv"
CONFIG_FILE = "config.json"
#: Output formats :func:`plot_runs` writes, by file suffix.
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
_REPEAT_SUFFIX = re.compile(r"-\d+$")
# Where a restarted run moves an earlier attempt's files (aquaml.storage.set_aside_previous).
_SET_ASIDE = re.compile(r"previous-\d+$")


@dataclass
class Run:
    """One training run: where it is, which experiment and seed it belongs to, what it logged.

    Attributes:
        path: the run directory (the one holding ``progress.csv``).
        experiment: ``config.json``'s ``"name"``; without a config, the directory name with a
            trailing repeat suffix (``-2``, ``-3``...) removed, so repeats group together.
        seed: ``config.json``'s ``parameters.seed``, or None when not recorded.
        progress: ``progress.csv`` as a table; empty cells are NaN.
        config: the whole ``config.json`` object (empty when the run has none).
    """

    path: str
    experiment: str
    seed: int | None
    progress: pd.DataFrame = field(repr=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False)


def _read_progress(csv_path: str) -> pd.DataFrame:
    """Load ``progress.csv``; a run that has not written its first row yet gives an empty table."""
    try:
        return pd.read_csv(csv_path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{csv_path}: not a readable CSV file ({e})") from e


def _read_config(config_path: str) -> dict[str, Any]:
    """Load ``config.json`` (a JSON object); a missing file gives an empty dict."""
    if not os.path.isfile(config_path):
        return {}
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_path}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    return config


def load_run(run_dir: str) -> Run:
    """Read one run directory (it must hold ``progress.csv``; ``config.json`` is optional)."""
    run_dir = os.path.normpath(run_dir)
    config_path = os.path.join(run_dir, CONFIG_FILE)
    config = _read_config(config_path)
    name = config.get("name")
    if name is None:
        name = _REPEAT_SUFFIX.sub("", os.path.basename(os.path.abspath(run_dir)))
    elif not isinstance(name, str) or not name:
        raise ValueError(f"{config_path}: \"name\" must be a non-empty string, got {name!r}")
    parameters = config.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ValueError(f"{config_path}: \"parameters\" must be a JSON object, got {type(parameters).__name__}")
    seed = parameters.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"{config_path}: parameters.seed must be an integer or null, got {seed!r}")
    progress = _read_progress(os.path.join(run_dir, PROGRESS_FILE))
    return Run(path=run_dir, experiment=name, seed=seed, progress=progress, config=config)


def find_runs(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Run]:
    """Every run directory at or under ``paths``, loaded, in a stable (sorted) order.

    Each path is either a run directory (it holds ``progress.csv``), a ``progress.csv`` file, or a
    directory searched recursively for run directories (the search does not descend into a run
    directory, nor into ``previous-<k>/`` folders, where a restarted run sets aside an abandoned
    attempt that would otherwise count as one more seed). A run reached through two paths is
    returned once.

    Raises:
        ValueError: a path does not exist, or holds no ``progress.csv`` anywhere below it.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    runs: list[Run] = []
    seen: set[str] = set()
    for path in map(os.fspath, paths):
        if not os.path.exists(path):
            raise ValueError(f"run path {path!r} does not exist")
        if os.path.isfile(path):
            if os.path.basename(path) != PROGRESS_FILE:
                raise ValueError(f"run path {path!r} is a file; expected a run directory, a directory of "
                                 f"runs or a {PROGRESS_FILE}")
            found = [os.path.dirname(path) or "."]
        else:
            found = []
            for root, dirs, files in os.walk(path):
                if PROGRESS_FILE in files:
                    found.append(root)
                    dirs[:] = []  # a run's own subdirectories (models/, checkpoints) are not runs
                else:
                    dirs[:] = sorted(d for d in dirs if not _SET_ASIDE.match(d))
        if not found:
            raise ValueError(f"run path {path!r} holds no {PROGRESS_FILE} (searched recursively, "
                             "skipping set-aside previous-<k>/ attempts); "
                             "expected a run directory or a directory of runs")
        for run_dir in sorted(found):
            key = os.path.realpath(run_dir)
            if key not in seen:
                seen.add(key)
                runs.append(load_run(run_dir))
    return runs


def _column(run: Run, column: str, role: str) -> np.ndarray:
    """``run``'s column as floats, with an error that lists what the CSV does have."""
    if column not in run.progress.columns:
        available = ", ".join(map(str, run.progress.columns)) or "none (progress.csv is empty)"
        raise ValueError(f"{role} column {column!r} not in {os.path.join(run.path, PROGRESS_FILE)}; "
                         f"available columns: {available}")
    values = pd.to_numeric(run.progress[column], errors="coerce").to_numpy(dtype=float)
    bad = run.progress[column].notna().to_numpy() & np.isnan(values)
    if bad.any():
        raise ValueError(f"{role} column {column!r} in {os.path.join(run.path, PROGRESS_FILE)} holds "
                         f"non-numeric values (first: {run.progress[column][bad].iloc[0]!r}); expected numbers "
                         "or empty cells")
    return values


def _valid_points(run: Run, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``run`` where both ``x`` and ``y`` were measured (finite), x strictly increasing."""
    xs, ys = _column(run, x, "x"), _column(run, y, "y")
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if len(xs) < 2:
        raise ValueError(f"run {run.path} has {len(xs)} row(s) with both x={x!r} and y={y!r} measured; "
                         "at least 2 are needed to draw a curve")
    if np.any(np.diff(xs) <= 0):
        raise ValueError(f"run {run.path}: x column {x!r} is not strictly increasing over the rows that "
                         f"measure {y!r}; expected one row per step (was the run resumed into the same "
                         "progress.csv?)")
    return xs, ys


def learning_curves(runs: Sequence[Run], y: str = "eval/return_mean", x: str = "global_step",
                    points: int = 200) -> pd.DataFrame:
    """Every run's ``y`` against ``x``, resampled onto one common ``x`` grid per experiment.

    For each experiment the grid is ``points`` evenly spaced values over the overlap of its runs'
    ``x`` ranges (the largest first ``x`` to the smallest last ``x``), so every run contributes
    at every grid step and the mean/band across runs compare like with like. Each run's rows
    where both ``x`` and ``y`` are measured are linearly interpolated onto that grid.

    Returns:
        A long table with columns ``experiment, run, x, y`` (``run`` is the run's path),
        experiments in order of first appearance in ``runs``.

    Raises:
        ValueError: no runs; ``points`` < 2; ``x`` or ``y`` missing from a run (the message lists
            the available columns); a run with fewer than 2 measured points; an experiment whose
            runs' ``x`` ranges do not overlap.
    """
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    if not runs:
        raise ValueError("runs is empty; expected at least one Run (see find_runs)")
    by_experiment: dict[str, list[tuple[Run, np.ndarray, np.ndarray]]] = {}
    for run in runs:
        by_experiment.setdefault(run.experiment, []).append((run, *_valid_points(run, x, y)))
    frames = []
    for experiment, members in by_experiment.items():
        lo = max(float(xs[0]) for _, xs, _ in members)
        hi = min(float(xs[-1]) for _, xs, _ in members)
        if not lo < hi:
            ranges = "; ".join(f"{run.path}: {xs[0]:g}..{xs[-1]:g}" for run, xs, _ in members)
            raise ValueError(f"experiment {experiment!r}: the runs' {x!r} ranges do not overlap ({ranges}); "
                             "expected a common range to average over")
        grid = np.linspace(lo, hi, int(points))
        for run, xs, ys in members:
            frames.append(pd.DataFrame({"experiment": experiment, "run": run.path, "x": grid,
                                        "y": np.interp(grid, xs, ys)}))
    return pd.concat(frames, ignore_index=True)


def _output_format(output: str | os.PathLike) -> str:
    """The savefig format for ``output``'s suffix, or an error naming the supported ones."""
    suffix = os.path.splitext(os.fspath(output))[1].lower()
    if suffix not in FORMATS:
        raise ValueError(f"output {os.fspath(output)!r} has suffix {suffix or '(none)'!r}; expected one of "
                         f"{', '.join(FORMATS)}")
    return FORMATS[suffix]


def plot_runs(paths: str | os.PathLike | Iterable[str | os.PathLike], output: str | os.PathLike,
              y: str = "eval/return_mean", x: str = "global_step", points: int = 200,
              title: str | None = None, band: float | None = 95) -> Figure:
    """Plot each experiment's mean learning curve across its runs, with a confidence band.

    Runs are found with :func:`find_runs` and resampled with :func:`learning_curves`; seaborn
    draws one line per experiment (the mean over runs at each grid step) and a bootstrap ``band``
    % confidence interval around it, with a fixed bootstrap seed so the same runs always give the
    same picture. The legend gives each experiment's run count. The figure is written to
    ``output`` atomically (format from the suffix: .png, .pdf or .svg).

    Args:
        band: confidence level in percent, in (0, 100]; None draws no band.

    Returns:
        The matplotlib Figure (Agg canvas, not registered with pyplot: nothing to close).

    Raises:
        ValueError: unsupported ``output`` suffix or ``band`` (checked before any run is read),
            or anything :func:`find_runs` / :func:`learning_curves` reject.
    """
    import seaborn as sns  # imported here: seaborn is slow to import and only plotting needs it

    fmt = _output_format(output)
    if band is not None and (isinstance(band, bool) or not isinstance(band, (int, float))
                             or not 0 < band <= 100):
        raise ValueError(f"band must be a confidence level in (0, 100] percent or None, got {band!r}")
    runs = find_runs(paths)
    curves = learning_curves(runs, y=y, x=x, points=points)
    experiments = list(dict.fromkeys(curves["experiment"]))
    counts = curves.groupby("experiment", sort=False)["run"].nunique()
    # Distinct colours per experiment (the default cycle repeats after 10): lines are matched by colour below.
    colours = sns.color_palette(None if len(experiments) <= 10 else "husl", n_colors=len(experiments))
    palette = dict(zip(experiments, colours))

    fig = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    sns.lineplot(data=curves, x="x", y="y", hue="experiment", hue_order=experiments, palette=palette,
                 errorbar=None if band is None else ("ci", band), seed=0, legend=False, ax=ax)
    # Label the mean lines ourselves (matched by colour, not draw order) so the legend shows run counts.
    for line in ax.lines:
        for experiment, colour in palette.items():
            if np.allclose(to_rgba(line.get_color()), to_rgba(colour)):
                n = int(counts[experiment])
                line.set_label(f"{experiment} ({n} run{'s' if n != 1 else ''})")
                line.set_gid(experiment)
    ax.legend(title=None if band is None else f"mean, {band:g}% CI")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    if title is not None:
        ax.set_title(title)
    with atomic_path(os.fspath(output)) as tmp:
        fig.savefig(tmp, format=fmt, dpi=150)
    return fig
