"""Learning-curve plots (aquaml.plotting) on small fabricated run directories.

The expected curves are recomputed here from the raw CSV text (csv module + np.interp), not with
aquaml.plotting.learning_curves, so a wrong grid, a wrong interpolation or a wrong aggregation in
the library shows up as a mismatch with the lines actually drawn.
"""
from __future__ import annotations

import csv
import json
import math
import os
import struct

import numpy as np
import pytest

from aquaml.plotting import find_runs, learning_curves, plot_runs

POINTS = 40  # seaborn bootstraps every grid step in Python: keep the grid small for fast tests
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HEADER = ["global_step", "time/elapsed_s", "charts/episode_return", "eval/return_mean", "losses/qf_loss"]

# experiment -> [(directory name, seed or None for "no config.json", first step, step interval, rows)]
LAYOUT = {
    "pendulum_sac": [("pendulum_sac", 0, 1000, 1000, 30),
                     ("pendulum_sac-2", 1, 2000, 1000, 31),
                     ("pendulum_sac-3", 2, 500, 1000, 27)],
    "cartpole_ppo": [("cartpole_ppo", 7, 1500, 1500, 20),
                     ("cartpole_ppo-2", None, 3000, 1500, 22)],  # no config: name from directory
}
EVAL_EVERY = 3  # eval/return_mean is measured on every third row only (empty cells elsewhere)


def _write_run(run_dir: str, experiment: str, seed: int | None, first: int, interval: int, rows: int) -> None:
    os.makedirs(run_dir)
    if seed is not None:
        with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump({"name": experiment, "algo": "SAC", "parameters": {"seed": seed, "gamma": 0.99}}, f)
    phase = 0.0 if seed is None else 0.7 * seed
    with open(os.path.join(run_dir, "progress.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i in range(rows):
            step = first + i * interval
            ret = -1500 + 40 * math.sqrt(step) + 80 * math.sin(step / 3000 + phase)
            ev = f"{ret + 25 * math.cos(step / 2000 + phase):.4f}" if i % EVAL_EVERY == 1 else ""
            w.writerow([step, f"{0.01 * i:.3f}", f"{ret:.4f}", ev, f"{1 / (i + 1):.5f}"])


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("plotting") / "runs")
    for experiment, members in LAYOUT.items():
        for dirname, seed, first, interval, rows in members:
            _write_run(os.path.join(root, dirname), experiment, seed, first, interval, rows)
    os.makedirs(os.path.join(root, "pendulum_sac", "models"))  # a run's subdirectory is not a run
    # A restarted run that has not logged yet: its abandoned attempt, set aside, is not a run either.
    _write_run(os.path.join(root, "acrobot_sac", "previous-1"), "acrobot_sac", 0, 1000, 1000, 10)
    return root


def _expected(root: str, experiment: str, y: str, points: int) -> tuple[np.ndarray, np.ndarray]:
    """The grid and the mean across runs, straight from the CSV text."""
    curves = []
    for dirname, *_ in LAYOUT[experiment]:
        with open(os.path.join(root, dirname, "progress.csv"), newline="", encoding="utf-8") as f:
            pairs = [(float(r["global_step"]), float(r[y])) for r in csv.DictReader(f) if r[y] != ""]
        curves.append(np.array(pairs))
    grid = np.linspace(max(c[0, 0] for c in curves), min(c[-1, 0] for c in curves), points)
    return grid, np.mean([np.interp(grid, c[:, 0], c[:, 1]) for c in curves], axis=0)


def _lines_by_experiment(fig) -> dict[str, object]:
    """The mean line of each experiment, found by its legend label ("<experiment> (<n> runs)")."""
    (ax,) = fig.axes
    found: dict[str, object] = {}
    for line in ax.lines:
        for experiment in LAYOUT:
            if line.get_label().startswith(experiment + " ("):
                assert experiment not in found, f"two lines labelled for {experiment}"
                found[experiment] = line
    assert set(found) == set(LAYOUT), [line.get_label() for line in ax.lines]
    return found


@pytest.fixture(scope="module")
def eval_plot(runs_root):
    output = os.path.join(os.path.dirname(runs_root), "plots", "eval.png")
    fig = plot_runs([runs_root], output, points=POINTS, title="eval returns")
    return fig, output


def test_png_written_with_sensible_size(eval_plot):
    _, output = eval_plot
    with open(output, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", head[16:24])  # IHDR
    assert 500 <= width <= 4000 and 300 <= height <= 3000, (width, height)
    assert [n for n in os.listdir(os.path.dirname(output)) if n.startswith(".tmp-")] == []


def test_lines_are_mean_of_interpolated_runs(eval_plot, runs_root):
    fig, _ = eval_plot
    lines = _lines_by_experiment(fig)
    for experiment, line in lines.items():
        grid, mean = _expected(runs_root, experiment, "eval/return_mean", POINTS)
        xs, ys = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        assert np.allclose(xs, grid), experiment
        assert np.allclose(ys, mean), experiment


def test_grid_spans_overlap_of_runs(eval_plot):
    lines = _lines_by_experiment(eval_plot[0])
    # Eval rows are i = 1, 4, 7...; step = first + i * interval.
    # pendulum_sac: first at 2000/3000/1500, last at 29000 (i=28) / 30000 (i=28) / 25500 (i=25).
    assert lines["pendulum_sac"].get_xdata()[0] == pytest.approx(3000)
    assert lines["pendulum_sac"].get_xdata()[-1] == pytest.approx(25500)
    # cartpole_ppo: first at 3000/4500, last at 30000 (i=19) / 31500 (i=19).
    assert lines["cartpole_ppo"].get_xdata()[0] == pytest.approx(4500)
    assert lines["cartpole_ppo"].get_xdata()[-1] == pytest.approx(30000)


def test_legend_counts_band_and_labels(eval_plot):
    fig, _ = eval_plot
    (ax,) = fig.axes
    labels = sorted(t.get_text() for t in ax.get_legend().get_texts())
    assert labels == ["cartpole_ppo (2 runs)", "pendulum_sac (3 runs)"]
    assert ax.get_xlabel() == "global_step" and ax.get_ylabel() == "eval/return_mean"
    assert ax.get_title() == "eval returns"
    assert len(ax.collections) == 2  # one confidence band per experiment


def test_band_is_reproducible(runs_root, tmp_path):
    figs = [plot_runs([runs_root], str(tmp_path / f"{k}.png"), points=8) for k in range(2)]
    bands = [[c.get_paths()[0].vertices for c in f.axes[0].collections] for f in figs]
    assert all(np.array_equal(a, b) for a, b in zip(*bands))


def test_other_column_and_svg(runs_root, tmp_path):
    output = str(tmp_path / "train.svg")
    run_dirs = [os.path.join(runs_root, d[0]) for members in LAYOUT.values() for d in members]
    fig = plot_runs(run_dirs, output,
                    y="charts/episode_return", points=12)
    with open(output, encoding="utf-8") as f:
        assert "<svg" in f.read(2000)
    for experiment, line in _lines_by_experiment(fig).items():
        grid, mean = _expected(runs_root, experiment, "charts/episode_return", 12)
        assert np.allclose(line.get_xdata(), grid) and np.allclose(line.get_ydata(), mean), experiment
    assert fig.axes[0].get_ylabel() == "charts/episode_return"


def test_find_runs_reads_name_seed_and_repeat_suffix(runs_root):
    runs = {os.path.basename(r.path): r for r in find_runs([runs_root, os.path.join(runs_root, "pendulum_sac")])}
    assert len(runs) == 5  # the run named twice is returned once; models/ and previous-1/ are not runs
    assert (runs["pendulum_sac-3"].experiment, runs["pendulum_sac-3"].seed) == ("pendulum_sac", 2)
    assert (runs["cartpole_ppo-2"].experiment, runs["cartpole_ppo-2"].seed) == ("cartpole_ppo", None)
    assert np.isnan(runs["pendulum_sac"].progress["eval/return_mean"].iloc[0])
    frame = learning_curves(list(runs.values()), points=5)
    assert list(frame.columns) == ["experiment", "run", "x", "y"] and len(frame) == 5 * 5


def test_bad_column_lists_available_columns(runs_root, tmp_path):
    with pytest.raises(ValueError, match="'eval/return_avg'") as info:
        plot_runs([runs_root], str(tmp_path / "x.png"), y="eval/return_avg")
    assert all(column in str(info.value) for column in HEADER)
    with pytest.raises(ValueError, match="x column 'step'"):
        plot_runs([runs_root], str(tmp_path / "x.png"), x="step")
    assert not os.path.exists(tmp_path / "x.png")


def test_run_with_too_few_points_raises(tmp_path):
    _write_run(str(tmp_path / "short"), "short", 0, 1000, 1000, 4)  # one eval row (index 1)
    with pytest.raises(ValueError, match="1 row.*at least 2"):
        plot_runs([str(tmp_path / "short")], str(tmp_path / "x.png"))


def test_paths_without_runs_raise(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty.*no progress.csv"):
        plot_runs([str(tmp_path / "empty")], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="missing.*does not exist"):
        find_runs([str(tmp_path / "missing")])


def test_non_overlapping_runs_raise(tmp_path):
    _write_run(str(tmp_path / "a"), "same", 0, 0, 100, 10)
    _write_run(str(tmp_path / "b"), "same", 1, 5000, 100, 10)
    with pytest.raises(ValueError, match="'same'.*do not overlap"):
        plot_runs([str(tmp_path)], str(tmp_path / "x.png"))


def test_unsupported_suffix_raises_before_reading_or_drawing(tmp_path, monkeypatch):
    import aquaml.plotting as plotting

    def fail(*args, **kwargs):
        raise AssertionError("runs were read before the output suffix was checked")

    monkeypatch.setattr(plotting, "find_runs", fail)
    for name in ("curves.jpg", "curves"):
        with pytest.raises(ValueError, match="suffix.*expected one of .png, .pdf, .svg"):
            plot_runs([str(tmp_path / "nowhere")], str(tmp_path / name))
        assert not os.path.exists(tmp_path / name)
