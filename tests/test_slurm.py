"""The batch scripts in hpc_jobs/ against a real one-node SLURM (hpc_jobs/local_slurm.sh).

The cluster needs root (it starts munged, slurmctld and slurmd, and installs slurm-wlm with
apt-get when missing). Without it the module is skipped, unless AQUAML_REQUIRE_SLURM=1, which
turns the skip into a failure (for CI). Jobs are submitted exactly as a cluster user would, with
``sbatch --export=ALL,AQUAML_STEPS=...`` and tiny budgets, from a temporary directory.
"""
import csv
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HPC = REPO / "hpc_jobs"
LOCAL_SLURM = HPC / "local_slurm.sh"
VENV = REPO / ".venv"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}
#: Seconds a tiny job may take from sbatch to its end on a busy two-core machine.
JOB_TIMEOUT = 240
#: Ranks of every training job: the optimizer and two workers.
NTASKS = 3
#: Flags that keep the tiny runs fast (one evaluation episode, no TensorBoard files).
QUICK = "--eval-episodes 1 --no-tensorboard"
#: Lines of TensorFlow's start-up chatter left out of job logs shown in failures.
NOISE = re.compile(r"^(I0000 |WARNING: All log messages)")


class Cluster:
    """Submits jobs to the local cluster and waits for them."""

    def __init__(self, conf: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AQUAML_", "SLURM_"))}
        self.env["SLURM_CONF"] = conf
        self.jobs: list[str] = []

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)

    def submit(self, script: str, workdir: Path, name: str, variables: dict, *sbatch_args: str) -> str:
        """``sbatch --parsable --chdir workdir --export=ALL,K=V,...`` of ``hpc_jobs/<script>``; the job id."""
        (workdir / "logs").mkdir(parents=True, exist_ok=True)  # Slurm does not create it
        # the session's checkpoint key (conftest), not the user's: AQUAML_ variables are not inherited here
        variables = {"AQUAML_VENV": str(VENV), "AQUAML_KEY_FILE": os.environ["AQUAML_KEY_FILE"], **variables}
        assert not any("," in str(v) for v in variables.values()), "sbatch --export cannot carry commas"
        export = ",".join(["ALL"] + [f"{k}={v}" for k, v in variables.items()])
        proc = self.run("sbatch", "--parsable", f"--chdir={workdir}", f"--job-name={name}", f"--export={export}",
                        *sbatch_args, str(HPC / script))
        assert proc.returncode == 0, f"sbatch {script} failed: {proc.stderr}"
        job = proc.stdout.strip().split(";")[0]
        self.jobs.append(job)
        return job

    def jobs_info(self, job: str) -> list[dict]:
        """``scontrol show job -o`` of a job (one dict per array task), fields as strings."""
        proc = self.run("scontrol", "show", "job", "-o", job)
        if proc.returncode != 0:
            return []
        infos = []
        for line in proc.stdout.splitlines():
            fields = dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))
            if "JobState" in fields:
                infos.append(fields)
        return infos

    def wait(self, job: str, timeout: float = JOB_TIMEOUT, tasks: int = 1) -> list[dict]:
        """Poll until the job (every one of its ``tasks`` array tasks) reached a final state."""
        deadline = time.monotonic() + timeout
        infos: list[dict] = []
        while time.monotonic() < deadline:
            infos = self.jobs_info(job)
            if len(infos) >= tasks and all(i["JobState"] in FINAL_STATES for i in infos):
                return infos
            time.sleep(0.5)
        self.run("scancel", job)
        states = [(i.get("JobId"), i.get("JobState"), i.get("Reason")) for i in infos]
        logs = "\n".join(job_log(i) for i in infos)
        raise AssertionError(f"job {job} not finished after {timeout:.0f} s: {states}\n{logs}")

    def cancel_all(self) -> None:
        if self.jobs:
            self.run("scancel", *self.jobs)


def job_log(info: dict, lines: int = 60) -> str:
    """The last lines of a job's output file (its StdOut path), without TensorFlow's start-up lines."""
    path = info.get("StdOut", "")
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"--- no log {path!r}: {exc}"
    kept = [line for line in text.splitlines() if not NOISE.match(line)]
    return f"--- {path} (last {lines} lines):\n" + "\n".join(kept[-lines:])


def assert_state(info: dict, state: str, exit_code: str | None = None) -> None:
    assert info["JobState"] == state, \
        f"job {info['JobId']} ended {info['JobState']} (ExitCode={info.get('ExitCode')}), expected {state}\n{job_log(info)}"
    if exit_code is not None:
        assert info["ExitCode"] == exit_code, f"job {info['JobId']} ExitCode={info['ExitCode']}\n{job_log(info)}"


def progress_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "progress.csv", newline="", encoding="utf-8") as f:
        return [int(float(row["global_step"])) for row in csv.DictReader(f)]


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name[len("step_"):]) for p in (run_dir / "checkpoints").glob("step_*")
                  if re.fullmatch(r"step_\d+", p.name))


def assert_finished_run(run_dir: Path, steps: int, info: dict) -> None:
    """A run directory that trained its whole budget: progress rows up to ``steps``, a checkpoint."""
    assert (run_dir / "progress.csv").is_file(), f"no progress.csv in {run_dir}\n{job_log(info)}"
    logged = progress_steps(run_dir)
    assert logged and logged[-1] == steps, f"progress.csv global_step {logged}, expected to end at {steps}"
    assert checkpoint_steps(run_dir), f"no checkpoint in {run_dir}/checkpoints"
    assert checkpoint_steps(run_dir)[-1] == steps, f"checkpoints {checkpoint_steps(run_dir)}, expected one at {steps}"


@pytest.fixture(scope="module")
def cluster():
    """The local cluster: started here (skipped without root) and stopped at the end, unless it
    was already running before the tests (then it is left as it was)."""
    if not os.access(LOCAL_SLURM, os.X_OK):
        pytest.fail(f"{LOCAL_SLURM} missing or not executable")
    required = os.environ.get("AQUAML_REQUIRE_SLURM") == "1"
    was_running = subprocess.run([str(LOCAL_SLURM), "status"], capture_output=True, timeout=60).returncode == 0
    proc = subprocess.run([str(LOCAL_SLURM), "start"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        if proc.returncode == 3 and not required:
            pytest.skip(f"no local SLURM: {reason}")
        pytest.fail(f"hpc_jobs/local_slurm.sh start failed (exit {proc.returncode}): {proc.stderr.strip()}"
                    + (" [AQUAML_REQUIRE_SLURM=1]" if required else ""))
    conf = re.search(r"^SLURM_CONF=(\S+)$", proc.stdout, re.M)
    assert conf, f"local_slurm.sh start printed no SLURM_CONF: {proc.stdout!r}"
    c = Cluster(conf.group(1))
    try:
        yield c
    finally:
        c.cancel_all()
        if not was_running:
            subprocess.run([str(LOCAL_SLURM), "stop"], capture_output=True, timeout=300)


@pytest.mark.parametrize("script,name,env,algo,steps,extra", [
    ("srun_one_node.sbatch", "t-srun", "Pendulum-v1", "sac", 400, ""),  # srun --mpi=pmi2
    ("mpirun_one_node.sbatch", "t-mpirun", "CartPole-v1", "ppo", 512, " --set rollout_steps=128"),  # mpiexec inside
])
def test_one_node_script_completes(cluster, tmp_path, script, name, env, algo, steps, extra):
    """The srun script (SAC) and the mpirun script (PPO): COMPLETED with progress.csv, a checkpoint
    and as many MPI ranks as tasks."""
    job = cluster.submit(script, tmp_path, name,
                         {"AQUAML_ENV": env, "AQUAML_ALGO": algo, "AQUAML_STEPS": steps,
                          "AQUAML_EXTRA_ARGS": QUICK + extra}, f"--ntasks={NTASKS}")
    (info,) = cluster.wait(job)
    assert_state(info, "COMPLETED", "0:0")
    assert_finished_run(tmp_path / "runs" / name / "seed0", steps, info)
    config = json.loads((tmp_path / "runs" / name / "seed0" / "config.json").read_text())
    assert config["ranks"] == NTASKS, f"config.json ranks {config['ranks']}: {script} did not start {NTASKS} MPI ranks"


def test_seed_array_runs_one_seed_per_task(cluster, tmp_path):
    """--array=0-1: two COMPLETED tasks, runs seed0 and seed1 with those seeds in config.json."""
    job = cluster.submit("seed_array.sbatch", tmp_path, "t-array",
                         {"AQUAML_ENV": "CartPole-v1", "AQUAML_ALGO": "ppo", "AQUAML_STEPS": 256,
                          "AQUAML_EXTRA_ARGS": f"{QUICK} --set rollout_steps=128"},
                         "--array=0-1", f"--ntasks={NTASKS}")
    infos = cluster.wait(job, tasks=2)
    assert sorted(i.get("ArrayTaskId") for i in infos) == ["0", "1"], [i.get("JobId") for i in infos]
    seeds = {}
    for info in infos:
        assert_state(info, "COMPLETED", "0:0")
        run_dir = tmp_path / "runs" / "t-array" / f"seed{info['ArrayTaskId']}"
        assert_finished_run(run_dir, 256, info)
        seeds[info["ArrayTaskId"]] = json.loads((run_dir / "config.json").read_text())["parameters"]["seed"]
    assert seeds == {"0": 0, "1": 1}, f"seeds by array task: {seeds}"


def test_term_checkpoints_and_resubmission_resumes(cluster, tmp_path, capsys):
    """TERM to the batch shell mid-run: the job checkpoints and ends COMPLETED; the same script
    submitted again continues from that checkpoint to the budget, with no step logged twice."""
    steps, name = 1500, "t-term"
    variables = {"AQUAML_ENV": "Pendulum-v1", "AQUAML_ALGO": "sac", "AQUAML_STEPS": steps,
                 "AQUAML_EXTRA_ARGS": f"{QUICK} --checkpoint-interval 250 --set epoch_length=50"}
    run_dir = tmp_path / "runs" / name / "seed0"
    first = cluster.submit("srun_one_node.sbatch", tmp_path, name, variables, f"--ntasks={NTASKS}")
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline and not (run_dir.is_dir() and checkpoint_steps(run_dir)):
        info = cluster.jobs_info(first)
        assert not (info and info[0]["JobState"] in FINAL_STATES), \
            f"job {first} ended {info[0]['JobState']} before its first checkpoint\n{job_log(info[0])}"
        time.sleep(0.2)
    assert checkpoint_steps(run_dir), f"no checkpoint after {JOB_TIMEOUT} s\n{job_log(cluster.jobs_info(first)[0])}"
    logged_before_term = (progress_steps(run_dir) or [0])[-1] if (run_dir / "progress.csv").exists() else 0
    proc = cluster.run("scancel", "--signal=TERM", "--batch", first)
    assert proc.returncode == 0, proc.stderr
    (info,) = cluster.wait(first)
    assert_state(info, "COMPLETED", "0:0")
    log1 = job_log(info, 200)
    assert "stopped by SIGTERM" in log1, f"the run did not stop on the forwarded TERM\n{log1}"
    stopped_at = checkpoint_steps(run_dir)[-1]
    assert stopped_at < steps, f"the run finished ({stopped_at} steps) before the TERM arrived: raise the budget"
    assert stopped_at >= logged_before_term, f"TERM checkpoint at {stopped_at} < step {logged_before_term} logged before"

    second = cluster.submit("srun_one_node.sbatch", tmp_path, name, variables, f"--ntasks={NTASKS}")
    (info,) = cluster.wait(second)
    assert_state(info, "COMPLETED", "0:0")
    log2 = job_log(info, 200)
    resumed = re.search(r"resuming from step (\d+)", log2)
    assert resumed, f"the resubmitted job did not resume\n{log2}"
    resumed_at = int(resumed.group(1))
    assert resumed_at == stopped_at, f"resumed from {resumed_at}, the TERM checkpoint is at {stopped_at}"
    logged = progress_steps(run_dir)
    assert all(a < b for a, b in zip(logged, logged[1:])), f"global_step not strictly increasing: {logged}"
    assert logged[-1] == steps, f"final global_step {logged[-1]}, budget {steps}"
    lost = max(0, logged_before_term - resumed_at)
    with capsys.disabled():
        print(f"\n[slurm TERM/resume] last step logged before TERM {logged_before_term}, TERM checkpoint "
              f"{stopped_at}, resumed from {resumed_at}: steps lost {lost}")
    assert lost == 0, f"{lost} steps had to be redone: SAC checkpoints at once on TERM"

    # a third submission finds the run finished and ends at once
    third = cluster.submit("srun_one_node.sbatch", tmp_path, name, variables, f"--ntasks={NTASKS}")
    (info,) = cluster.wait(third, timeout=60)
    assert_state(info, "COMPLETED", "0:0")
    assert "already finished" in job_log(info), job_log(info)
    assert progress_steps(run_dir) == logged


def test_multi_node_and_gpu_scripts_run(cluster, tmp_path):
    """Smoke tests on one node: multi_node.sbatch with two pseudo-nodes (so transitions travel as
    MPI messages) and gpu.sbatch without a GPU (--gres=none: allocate_gpu finds none)."""
    ppo = {"AQUAML_ENV": "CartPole-v1", "AQUAML_ALGO": "ppo", "AQUAML_STEPS": 256,
           "AQUAML_EXTRA_ARGS": f"{QUICK} --set rollout_steps=128"}
    multi = cluster.submit("multi_node.sbatch", tmp_path, "t-multi", {**ppo, "AQUAML_PSEUDO_NODE_SIZE": 2},
                           "--nodes=1", f"--ntasks-per-node={NTASKS}")
    gpu = cluster.submit("gpu.sbatch", tmp_path, "t-gpu", ppo, "--gres=none", f"--ntasks={NTASKS}")
    (multi_info,) = cluster.wait(multi)
    (gpu_info,) = cluster.wait(gpu)
    for info, name in ((multi_info, "t-multi"), (gpu_info, "t-gpu")):
        assert_state(info, "COMPLETED", "0:0")
        assert_finished_run(tmp_path / "runs" / name / "seed0", 256, info)
    assert f"{NTASKS} ranks on 1 node(s)" in job_log(multi_info), job_log(multi_info)
    assert "optimizer GPUs: none" in job_log(gpu_info), job_log(gpu_info)


@pytest.mark.parametrize("variables, message", [
    ({"AQUAML_VENV": "/nonexistent/venv"}, "no virtualenv at '/nonexistent/venv'"),
    ({"AQUAML_ENV": "NoSuchEnv-v0", "AQUAML_EXTRA_ARGS": "--no-tensorboard"}, "--env NoSuchEnv-v0: cannot make"),
], ids=["missing-venv", "bogus-env"])
def test_script_error_fails_the_job(cluster, tmp_path, variables, message):
    """A broken job ends FAILED, with the error in its log, well within the timeout."""
    job = cluster.submit("srun_one_node.sbatch", tmp_path, "t-fail", variables, "--ntasks=2")
    (info,) = cluster.wait(job, timeout=120)
    assert_state(info, "FAILED")
    assert message in job_log(info), f"{message!r} not in the log\n{job_log(info)}"


def test_batch_scripts_share_one_source_and_keep_only_their_own_parts():
    """Every .sbatch sources hpc_jobs/job_common.sh (found from the submit directory, since sbatch
    runs a copy of the script) and defines none of its shared parts again."""
    shared = (HPC / "job_common.sh").read_text()
    for name in ("srun_one_node.sbatch", "mpirun_one_node.sbatch", "multi_node.sbatch", "seed_array.sbatch",
                 "gpu.sbatch"):
        text = (HPC / name).read_text()
        assert 'source "$AQUAML_JOBS_DIR/job_common.sh"' in text and "${SLURM_SUBMIT_DIR:-$PWD}/hpc_jobs" in text
        assert "aquaml_prepare" in text and re.search(r"^aquaml_run ", text, re.M), name
        for part in ("forward_term()", "on_term()", "trap on_term TERM", "wait \"$step_pid\"", "source \"$AQUAML_VENV"):
            assert part in shared and part not in text, f"{name} repeats {part}"
