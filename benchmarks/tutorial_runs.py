"""Shared by the benchmark scripts: run a tutorial as a whole process and read its final return."""
import os
import re
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def final_return(cmd: list[str], what: str) -> tuple[float, float]:
    """Run ``cmd`` in a fresh temporary directory; return the ``final evaluation return:`` it
    prints and the process's wall-clock seconds.

    Raises:
        RuntimeError: the process failed or printed no final return (its output's tail attached).
    """
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        wall = time.perf_counter() - start
    match = re.search(r"final evaluation return: (-?[\d.]+)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return float(match.group(1)), wall
