"""SLURM launch latency and the training steps a stop-then-resume cycle costs, on the local cluster.

    .venv/bin/python benchmarks/slurm_latency.py [--repeats 3] [--no-timelimit] [--keep-cluster]

Starts hpc_jobs/local_slurm.sh if it is not running (and stops it at the end if it started it),
then submits hpc_jobs/srun_one_node.sbatch (SAC on Pendulum-v1, 3 ranks: optimizer + 2 workers)
from a temporary directory:

1. latency: the time from ``sbatch`` to the job running, to the first progress line in the job's
   log and to the first row of progress.csv; median over ``--repeats`` submissions (each job is
   cancelled once its first row is there).
2. steps lost to a stop-then-resume cycle: a job is stopped once it has passed its first periodic
   checkpoint, then the script is submitted again and the steps lost are the last global_step seen
   in progress.csv before the stop minus the step the new job says it resumed from:
   - TERM with time to spare (``scancel --signal=TERM --batch``): target 0;
   - the time limit, through the scripts' ``--signal=B:TERM@60`` (here ``--time=2``, so the
     signal comes 60 s before the limit): target 0;
   - plain ``scancel`` (TERM to the ranks from Slurm, and srun, on its own TERM, kills them):
     whatever the ranks write before they are killed; target at most the checkpoint interval;
   - SIGKILL to the ranks (``kill -KILL`` of the pids ``scontrol listpids`` gives, like a node
     failure): no stop checkpoint; target at most the checkpoint interval. (``scancel
     --signal=KILL`` would not do: Slurm treats it as a plain cancel, TERM first.)

Runs take steps slowly on purpose (epoch_length 100, so progress.csv has a row every 100 steps);
the machine may be shared, so the figures are wall-clock times of that machine.
"""
import argparse
import csv
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPC = os.path.join(REPO, "hpc_jobs")
SCRIPT = os.path.join(HPC, "srun_one_node.sbatch")
VENV = os.path.join(REPO, ".venv")
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "PREEMPTED"}
NTASKS = 3
INTERVAL = 1000
BUDGET = 100_000  # never reached: every job here is stopped or cancelled


class Cluster:
    def __init__(self) -> None:
        self.started = False
        if subprocess.run([os.path.join(HPC, "local_slurm.sh"), "status"], capture_output=True).returncode != 0:
            proc = subprocess.run([os.path.join(HPC, "local_slurm.sh"), "start"], capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"cannot start the local SLURM (exit {proc.returncode}): {proc.stderr.strip()}")
            self.started = True
        conf = subprocess.run([os.path.join(HPC, "local_slurm.sh"), "env"], capture_output=True, text=True).stdout
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AQUAML_", "SLURM_"))}
        self.env["SLURM_CONF"] = re.search(r"SLURM_CONF=(\S+)", conf).group(1)
        self.jobs: list[str] = []

    def run(self, *args: str) -> str:
        proc = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def submit(self, workdir: str, name: str, *sbatch_args: str) -> str:
        os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
        export = (f"ALL,AQUAML_VENV={VENV},AQUAML_ENV=Pendulum-v1,AQUAML_ALGO=sac,AQUAML_STEPS={BUDGET},"
                  f"AQUAML_EXTRA_ARGS=--no-tensorboard --checkpoint-interval {INTERVAL} --set epoch_length=100")
        job = self.run("sbatch", "--parsable", f"--chdir={workdir}", f"--job-name={name}", f"--ntasks={NTASKS}",
                       f"--export={export}", *sbatch_args, SCRIPT).strip().split(";")[0]
        self.jobs.append(job)
        return job

    def info(self, job: str) -> dict:
        try:
            out = self.run("scontrol", "show", "job", "-o", job)
        except RuntimeError:
            return {}
        return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", out))

    def wait_final(self, job: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.info(job)
            if info.get("JobState") in FINAL:
                return info
            time.sleep(0.5)
        raise RuntimeError(f"job {job} did not end within {timeout} s")

    def close(self, keep: bool) -> None:
        if self.jobs:
            subprocess.run(["scancel", *self.jobs], env=self.env, capture_output=True)
        if self.started and not keep:
            subprocess.run([os.path.join(HPC, "local_slurm.sh"), "stop"], capture_output=True)


def read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def last_step(run_dir: str) -> int | None:
    try:
        with open(os.path.join(run_dir, "progress.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    return int(float(rows[-1]["global_step"])) if rows else None


def checkpoints(run_dir: str) -> list[int]:
    try:
        names = os.listdir(os.path.join(run_dir, "checkpoints"))
    except OSError:
        return []
    return sorted(int(n[5:]) for n in names if re.fullmatch(r"step_\d+", n))


def wait_for(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def latency(cluster: Cluster, root: str, repeats: int) -> None:
    print(f"sbatch -> first logged training step ({NTASKS} ranks, SAC Pendulum-v1, {repeats} submissions)")
    rows = []
    for k in range(repeats):
        workdir = os.path.join(root, f"latency{k}")
        run_dir = os.path.join(workdir, "runs", "lat", "seed0")
        t0 = time.monotonic()
        job = cluster.submit(workdir, "lat")
        running = line = row = None
        log = None
        while row is None or line is None:
            now = time.monotonic() - t0
            if now > 300:
                raise RuntimeError(f"job {job}: no progress after 300 s")
            if running is None:
                info = cluster.info(job)
                if info.get("JobState") == "RUNNING":
                    running, log = now, info.get("StdOut")
                elif info.get("JobState") in FINAL:
                    raise RuntimeError(f"job {job} ended {info['JobState']}: {read(info.get('StdOut', ''))[-2000:]}")
            if line is None and log and re.search(r"^\[seed0\] step \d+", read(log), re.M):
                line = now
            if row is None and last_step(run_dir) is not None:
                row = now
            time.sleep(0.05)
        cluster.run("scancel", job)
        rows.append((running, line, row))
        print(f"  submission {k + 1}: running after {running:.1f} s, first progress line {line:.1f} s, "
              f"first progress.csv row {row:.1f} s")
        cluster.wait_final(job)
    med = [statistics.median(col) for col in zip(*rows)]
    print(f"  median: running {med[0]:.1f} s, first progress line {med[1]:.1f} s, first progress.csv row {med[2]:.1f} s")


def stop_resume(cluster: Cluster, root: str, label: str, stop, sbatch_args=(), target: str = "0",
                wait_first: bool = True) -> int:
    """Run (until past the first periodic checkpoint when ``wait_first``), ``stop(job, observe)``,
    resubmit; return the steps lost."""
    workdir = os.path.join(root, label)
    run_dir = os.path.join(workdir, "runs", label, "seed0")
    job = cluster.submit(workdir, label, *sbatch_args)
    seen = [0]

    def observe() -> int:
        step = last_step(run_dir)
        if step is not None:
            seen[0] = max(seen[0], step)
        return seen[0]

    if wait_first:
        wait_for(lambda: checkpoints(run_dir) and observe() >= checkpoints(run_dir)[0] + 300, 400,
                 f"{label}: steps past the first checkpoint")
    before = stop(job, observe)
    info = cluster.wait_final(job)
    print(f"  {label}: stopped at step ~{before} (job {info['JobState']}, exit {info['ExitCode']}); "
          f"checkpoints {checkpoints(run_dir)}")
    again = cluster.submit(workdir, label)
    log = wait_for(lambda: cluster.info(again).get("StdOut"), 60, "the resumed job's log path")
    found = wait_for(lambda: re.search(r"resuming from step (\d+)", read(log)), 300, f"{label}: 'resuming from step'")
    cluster.run("scancel", again)
    cluster.wait_final(again)
    resumed = int(found.group(1))
    lost = max(0, before - resumed)
    print(f"  {label}: resumed from step {resumed}: steps lost {lost} (target {target})")
    return lost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-timelimit", action="store_true", help="skip the time-limit case (~2 minutes)")
    ap.add_argument("--keep-cluster", action="store_true", help="leave a cluster started here running")
    args = ap.parse_args()
    cluster = Cluster()
    try:
        with tempfile.TemporaryDirectory(prefix="aquaml-slurm-bench-") as root:
            os.chmod(root, 0o755)
            latency(cluster, root, args.repeats)
            print(f"\nsteps lost to stop-then-resubmit (checkpoint interval {INTERVAL}, progress row every 100 steps)")

            def term_batch(job, observe):
                before = observe()
                cluster.run("scancel", "--signal=TERM", "--batch", job)
                return before

            def plain_cancel(job, observe):
                before = observe()
                cluster.run("scancel", job)
                return before

            def sigkill(job, observe):
                pids = []
                for line in cluster.run("scontrol", "listpids", job).splitlines()[1:]:
                    pid = line.split()[0]
                    if pid.isdigit() and b"aquaml.cli" in read_bytes(f"/proc/{pid}/cmdline"):
                        pids.append(int(pid))
                if not pids:
                    raise RuntimeError(f"job {job}: no aquaml ranks in scontrol listpids")
                before = observe()
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                return before

            def time_limit(job, observe):  # the limit's TERM comes on its own: watch the log for it
                log = wait_for(lambda: cluster.info(job).get("StdOut"), 60, "the job's log path")
                deadline = time.monotonic() + 300
                before = observe()
                while "aquaml job: TERM at" not in read(log):
                    if time.monotonic() > deadline:
                        raise RuntimeError("no TERM from the time limit within 300 s")
                    before = observe()  # read before the log: a row seen here predates the TERM
                    time.sleep(0.1)
                return before

            stop_resume(cluster, root, "term-batch", term_batch, target="0")
            if not args.no_timelimit:
                stop_resume(cluster, root, "time-limit", time_limit, ("--time=2",), target="0", wait_first=False)
            stop_resume(cluster, root, "plain-scancel", plain_cancel, target=f"<= {INTERVAL}")
            stop_resume(cluster, root, "sigkill", sigkill, target=f"<= {INTERVAL}")
    finally:
        cluster.close(args.keep_cluster)


if __name__ == "__main__":
    main()
