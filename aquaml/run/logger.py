"""Run logging: ``progress.csv``, TensorBoard scalars and a one-line-per-epoch console display.

Metric names follow CleanRL: ``charts/*`` for what the run produces (returns, speed), ``losses/*``
for what the optimizer sees, ``eval/*`` for deterministic evaluation.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
import warnings
from typing import Mapping, Sequence, TextIO

import numpy as np
import tensorflow as tf

from aquaml.storage import atomic_path


def _truncate_csv(path: str, step: int) -> list[str]:
    """Drop the rows after ``step`` (written after the checkpoint a run resumes from); return the header.

    The file is rewritten atomically, so an interrupted resume cannot lose the rows kept.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    col = header.index("global_step")
    kept = [r for r in body if r and int(float(r[col])) <= step]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header] + kept)
    return header


def _truncate_events(run_dir: str, step: int) -> None:
    """Drop the TensorBoard events after ``step`` from the run's event files, as ``_truncate_csv``
    drops progress.csv's rows: TensorBoard then shows what progress.csv holds, not the scalars of
    an attempt that died after its last checkpoint. Each file is rewritten atomically."""
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name)
        if not name.startswith("events.out.tfevents.") or not os.path.isfile(path):
            continue
        records = [bytes(r) for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
        kept = [r for r in records if tf.compat.v1.Event.FromString(r).step <= step]
        if len(kept) == len(records):
            continue
        with atomic_path(path) as tmp:
            with tf.io.TFRecordWriter(tmp) as writer:
                for record in kept:
                    writer.write(record)


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class RunLogger:
    """Writes one row per epoch to ``progress.csv`` and TensorBoard, and prints progress lines.

    The CSV header is fixed by the first row; a metric first seen later is reported once and not
    written (a CSV cannot grow columns), while TensorBoard gets every metric.
    """

    def __init__(self, run_dir: str, name: str, total_steps: int, tensorboard: bool = True,
                 stream: TextIO | None = None, resume_step: int | None = None, elapsed: float = 0.0) -> None:
        self.run_dir, self.name, self.total_steps = run_dir, name, total_steps
        self.stream = stream or sys.stdout
        path = os.path.join(run_dir, "progress.csv")
        self._csv: csv.DictWriter | None = None
        if resume_step is not None and os.path.exists(path):
            header = _truncate_csv(path, resume_step)
            self._csv_file = open(path, "a", newline="", encoding="utf-8")
            if header:
                self._csv = csv.DictWriter(self._csv_file, fieldnames=header, extrasaction="ignore")
        else:
            self._csv_file = open(path, "w", newline="", encoding="utf-8")
        self._dropped: set[str] = set()
        self._writer = None
        if tensorboard:
            if resume_step is not None:
                _truncate_events(run_dir, resume_step)
            self._writer = tf.summary.create_file_writer(run_dir)
        self.start = time.perf_counter() - elapsed

    @property
    def elapsed(self) -> float:
        """Seconds of training so far, over every resumed part of the run."""
        return time.perf_counter() - self.start

    def write(self, step: int, row: Mapping[str, float]) -> None:
        """Record ``row`` (metric name -> value; NaN for "not measured this epoch") at ``step``."""
        row = {"global_step": step, "time/elapsed_s": round(time.perf_counter() - self.start, 3), **row}
        if self._csv is None:
            self._csv = csv.DictWriter(self._csv_file, fieldnames=list(row), extrasaction="ignore")
            self._csv.writeheader()
        new = [k for k in row if k not in self._csv.fieldnames and k not in self._dropped]
        if new:
            self._dropped.update(new)
            warnings.warn(f"metrics {new} appeared after the first progress.csv row; they go to "
                          "TensorBoard only", stacklevel=2)
        self._csv.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
        self._csv_file.flush()
        if self._writer is not None:
            with self._writer.as_default(step=step):
                for k, v in row.items():
                    if k != "global_step" and not (isinstance(v, float) and math.isnan(v)):
                        tf.summary.scalar(k, v)
            self._writer.flush()

    def display(self, step: int, row: Mapping[str, float], metrics: Sequence[tuple[str, str, str]] = ()) -> None:
        """Print one progress line: where the run is, how it is doing (returns, the algorithm's
        ``(metric, label, format)`` ``metrics``, speed), how long it has left."""
        elapsed = time.perf_counter() - self.start
        frac = step / max(self.total_steps, 1)
        parts = [f"[{self.name}] step {step}/{self.total_steps} ({100 * frac:.0f}%)"]
        for key, label, fmt in (("charts/episode_return", "return", ".1f"), ("eval/return_mean", "eval", ".1f"),
                                *metrics, ("charts/SPS", "sps", ".0f")):
            value = row.get(key, float("nan"))
            if not (isinstance(value, float) and math.isnan(value)):
                parts.append(f"{label} {value:{fmt}}")
        eta = elapsed / frac * (1 - frac) if frac > 0 else float("nan")
        parts.append(f"elapsed {_fmt_duration(elapsed)} eta {_fmt_duration(eta) if np.isfinite(eta) else '?'}")
        print(" | ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        self._csv_file.close()
        if self._writer is not None:
            self._writer.close()
