"""How long each runtime fault takes to end its job, and what it leaves in /dev/shm.

    .venv/bin/python benchmarks/fault_exits.py [--only NAME ...]

Every scenario is a real ``mpiexec`` launch (MPICH from the venv); each prints one line:

- ``sweep``: the replay-ratio x workers x node-layout sweep (tests/mpi_scripts/pacing_sweep.py),
  its slowest task (a stalled one would be cut off after stall_timeout=30 s);
- ``term-pseudo``, ``term-fork``: SIGTERM to a run whose workers sit on two nodes (pseudo-nodes, and
  MPICH's fork launcher with two host names), seconds from the signal to mpiexec's exit 0;
- ``refused-resume``: ``mpiexec -n 2 aquaml train --resume`` on a 3-rank checkpoint: seconds from
  the start to exit code 2 (every rank);
- ``one-worker-term``: SIGTERM to one worker only: seconds to the job's exit 0;
- ``stuck-step``: a worker's environment step that never returns, stall_timeout=10: seconds from the
  hang to the abort (of which 10 are the timeout itself);
- ``term-at-Ns``: SIGTERM to ``mpiexec -n 3 aquaml train`` N seconds after its start.

``/dev/shm`` holds MPICH's ``mpich_*`` files while a job runs; each line gives the count before and
after.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
MPIEXEC = os.path.join(os.path.dirname(PYTHON), "mpiexec")
RUN_TASK = os.path.join(ROOT, "tests", "mpi_scripts", "run_task.py")
RESUMABLE = os.path.join(ROOT, "tests", "scripts", "resumable.py")


def env(**extra):
    out = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "AQUAML_PSEUDO"))}
    out.update(extra)
    return out


def shm() -> int:
    return sum(1 for f in os.listdir("/dev/shm") if f.startswith("mpich"))


def report(name: str, seconds: float, before: int, code: int, note: str = "") -> None:
    print(f"{name:18s} {seconds:7.1f} s  exit {code:3d}  /dev/shm mpich files {before} -> {shm()}  {note}", flush=True)


def wait_path(proc, path, seconds=300):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no {path}: " + proc.communicate()[1][-2000:])
        time.sleep(0.05)


def sweep(tmp):
    before, start = shm(), time.monotonic()
    proc = subprocess.run([MPIEXEC, "-n", "3", PYTHON, os.path.join(ROOT, "tests", "mpi_scripts", "pacing_sweep.py"),
                           tmp], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=1800)
    tasks = re.findall(r"config (\S+ \d \w+ \d+) seconds ([\d.]+)", proc.stdout)
    slowest = max(tasks, key=lambda t: float(t[1])) if tasks else ("none", "nan")
    report("sweep", time.monotonic() - start, before, proc.returncode,
           f"{len(tasks)} tasks; slowest {slowest[1]} s (ratio workers layout sync: {slowest[0]})")


def term_nodes(tmp, layout):
    prefix = [MPIEXEC, "-n", "4"] if layout == "pseudo" else [MPIEXEC, "-launcher", "fork", "-hosts", "A:2,B:2", "-n", "4"]
    extra = {"AQUAML_PSEUDO_NODE_SIZE": "2"} if layout == "pseudo" else {}
    before = shm()
    proc = subprocess.Popen(prefix + [PYTHON, RESUMABLE, "--run-root", tmp, "--name", "run", "--interval", "500",
                                      "--steps", "20000", "--step-sleep", "0.004"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(**extra), cwd=ROOT)
    wait_path(proc, os.path.join(tmp, "run", "checkpoints", "step_000000000500"))
    time.sleep(0.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=600)
    report(f"term-{layout}", time.monotonic() - start, before, proc.returncode, "from SIGTERM to exit")


def refused_resume(tmp):
    train = [PYTHON, "-m", "aquaml.cli", "train", "--env", "Pendulum-v1", "--steps", "300", "--name", "run",
             "--run-root", tmp, "--hidden", "16,16", "--set", "learning_starts=100", "--quiet"]
    subprocess.run(train + ["--ranks", "3"], capture_output=True, env=env(), cwd=ROOT, timeout=600, check=True)
    before, start = shm(), time.monotonic()
    proc = subprocess.run([MPIEXEC, "-n", "2"] + train + ["--resume"], capture_output=True, text=True, env=env(),
                          cwd=ROOT, timeout=600)
    report("refused-resume", time.monotonic() - start, before, proc.returncode,
           f"from the start; 'cannot resume' printed {proc.stderr.count('cannot resume')} time(s)")


def _task(tmp, *extra):
    err = open(os.path.join(tmp, "stderr.txt"), "w")
    proc = subprocess.Popen([MPIEXEC, "-n", "3", PYTHON, RUN_TASK, "--run-root", tmp, "--eval-interval", "0", *extra],
                            stdout=subprocess.PIPE, stderr=err, text=True, env=env(), cwd=ROOT)
    pids = {}
    for line in proc.stdout:
        m = re.match(r"rank (\d) \w+ pid (\d+) started", line)
        if m:
            pids[int(m.group(1))] = int(m.group(2))
        if len(pids) == 3:
            break
    return proc, pids


def one_worker_term(tmp):
    before = shm()
    proc, pids = _task(tmp, "--env-sleep", "0.005", "--steps", "100000")
    wait_path(proc, os.path.join(tmp, "task", "checkpoints"), 300)  # training has begun
    start = time.monotonic()
    os.kill(pids[2], signal.SIGTERM)
    proc.communicate(timeout=600)
    report("one-worker-term", time.monotonic() - start, before, proc.returncode, "from SIGTERM to rank 2 to exit")


def stuck_step(tmp):
    before = shm()
    proc, _ = _task(tmp, "--steps", "100000", "--hang-rank", "2", "--hang-at", "300", "--stall-timeout", "10")
    proc.communicate(timeout=900)
    end = time.time()
    hung = float(re.search(r"hanging at ([\d.]+)", open(os.path.join(tmp, "stderr.txt")).read()).group(1))
    report("stuck-step", end - hung, before, proc.returncode, "from the hang to the abort (stall_timeout 10 s)")


def term_at(tmp, seconds):
    before = shm()
    proc = subprocess.Popen([MPIEXEC, "-n", "3", PYTHON, "-m", "aquaml.cli", "train", "--env", "Pendulum-v1", "--steps",
                             "100000", "--name", "run", "--run-root", os.path.join(tmp, "runs"), "--hidden", "16,16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    time.sleep(seconds)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    what = "stopped before training" if "before training started" in out else "checkpoint written"
    report(f"term-at-{seconds}s", time.monotonic() - start, before, proc.returncode, what)


SCENARIOS = {"sweep": sweep, "term-pseudo": lambda t: term_nodes(t, "pseudo"), "term-fork": lambda t: term_nodes(t, "fork"),
             "refused-resume": refused_resume, "one-worker-term": one_worker_term, "stuck-step": stuck_step,
             **{f"term-at-{s}s": (lambda t, s=s: term_at(t, s)) for s in (1, 3, 6, 7, 9)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args()
    for name in args.only:
        with tempfile.TemporaryDirectory(prefix=f"aquaml-fault-{name}-") as tmp:
            SCENARIOS[name](tmp)


if __name__ == "__main__":
    main()
