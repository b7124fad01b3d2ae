# job_common.sh -- what every aquaml batch script shares; sourced by the .sbatch scripts, not run.
#
# sbatch copies a batch script to Slurm's spool directory before it runs, so a script cannot find
# this file next to itself: it sources "$AQUAML_JOBS_DIR/job_common.sh", by default
# "$SLURM_SUBMIT_DIR/hpc_jobs" (submit from the project directory, or export AQUAML_JOBS_DIR).
#
# A script sets its own defaults first (AQUAML_FORWARD: how a TERM reaches the training step,
# "scancel" for srun steps, "kill" for a launcher started here), sources this file (which installs
# the TERM trap at once), calls aquaml_prepare, and then aquaml_run LAUNCHER... "${AQUAML_CMD[@]}".

# --- what to train: override any of these with sbatch --export=ALL,NAME=value ----------------
AQUAML_ENV="${AQUAML_ENV:-Pendulum-v1}"
AQUAML_ALGO="${AQUAML_ALGO:-sac}"
AQUAML_STEPS="${AQUAML_STEPS:-100000}"
AQUAML_SEED="${AQUAML_SEED:-0}"
AQUAML_EXTRA_ARGS="${AQUAML_EXTRA_ARGS:-}"             # more 'aquaml train' flags, split on spaces
AQUAML_VENV="${AQUAML_VENV:-${SLURM_SUBMIT_DIR:-$PWD}/.venv}"
AQUAML_RUN_ROOT="${AQUAML_RUN_ROOT:-runs/${SLURM_JOB_NAME:-aquaml}}"
AQUAML_FORWARD="${AQUAML_FORWARD:-scancel}"

die() { echo "aquaml job: error: $*" >&2; exit 1; }

# --- TERM to this shell: --signal=B:TERM@60 (60 s before the time limit) or scancel --batch ----
# srun answers TERM by killing its tasks, so for srun steps the signal goes to the job's steps
# through scancel (which never signals this batch shell); a launcher started here (mpiexec)
# forwards TERM to every rank itself. aquaml then checkpoints and exits 0.
step_pid="" stop_requested=0 forwarded=0 in_trap=0
# shellcheck disable=SC2317  # run by the trap
forward_term() {  # once, and only to a running step
    if [ -n "$step_pid" ] && [ "$forwarded" = 0 ]; then
        forwarded=1
        if [ "$AQUAML_FORWARD" = scancel ]; then
            scancel --signal=TERM "$SLURM_JOB_ID" ||
                echo "aquaml job: error: scancel --signal=TERM $SLURM_JOB_ID failed" >&2
        else
            kill -TERM "$step_pid" 2>/dev/null || true
        fi
    fi
}
# shellcheck disable=SC2317  # run by the trap
on_term() {
    in_trap=1
    if [ "$stop_requested" = 1 ]; then
        echo "aquaml job: another TERM at $(date +%T); already passed on, waiting for the checkpoint"
        return
    fi
    stop_requested=1
    echo "aquaml job: TERM at $(date +%T): asking the training step to checkpoint and stop"
    forward_term
}
trap on_term TERM

# aquaml_prepare: activate the venv, set threads, stop early if the run has already finished,
# and set AQUAML_CMD (the 'aquaml train' command line) and AQUAML_THREADS.
aquaml_prepare() {
    [ -n "${SLURM_JOB_ID:-}" ] || die "submit this script with sbatch"
    [ -f "$AQUAML_VENV/bin/activate" ] || die "no virtualenv at '$AQUAML_VENV' (set AQUAML_VENV)"
    set +u
    # shellcheck disable=SC1091
    source "$AQUAML_VENV/bin/activate"
    set -u
    python -c "import aquaml, mpi4py" || die "the venv at '$AQUAML_VENV' cannot import aquaml and mpi4py"
    AQUAML_THREADS="${SLURM_CPUS_PER_TASK:-1}"
    export OMP_NUM_THREADS="$AQUAML_THREADS"   # workers use 1 TensorFlow thread, the optimizer this many
    export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"   # no TensorFlow INFO lines per rank
    local extra_args
    read -r -a extra_args <<<"$AQUAML_EXTRA_ARGS"
    mkdir -p "$AQUAML_RUN_ROOT"

    # a run whose newest checkpoint is at the step budget has finished: do not start it again
    local last_step=-1 ckpt
    for ckpt in "$AQUAML_RUN_ROOT/seed$AQUAML_SEED"/checkpoints/step_*; do
        if [[ "${ckpt##*/}" =~ ^step_([0-9]+)$ ]] && [ "$((10#${BASH_REMATCH[1]}))" -gt "$last_step" ]; then
            last_step=$((10#${BASH_REMATCH[1]}))
        fi
    done
    if [ "$last_step" -ge "$AQUAML_STEPS" ]; then
        echo "aquaml job: $AQUAML_RUN_ROOT/seed$AQUAML_SEED already finished (checkpoint at step $last_step); nothing to do"
        exit 0
    fi
    AQUAML_CMD=(python -m aquaml.cli train --env "$AQUAML_ENV" --algo "$AQUAML_ALGO" --steps "$AQUAML_STEPS"
                --seed "$AQUAML_SEED" --run-root "$AQUAML_RUN_ROOT" --name "seed$AQUAML_SEED" --resume
                --threads "$AQUAML_THREADS" "${extra_args[@]}")
    echo "aquaml job $SLURM_JOB_ID${SLURM_ARRAY_JOB_ID:+ (array task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID})}" \
         "on $(hostname -s) at $(date '+%F %T'): restart ${SLURM_RESTART_COUNT:-0}, ${SLURM_NTASKS:-?} ranks on" \
         "${SLURM_JOB_NUM_NODES:-1} node(s) x $AQUAML_THREADS CPU(s), run $AQUAML_RUN_ROOT/seed$AQUAML_SEED"
}

# aquaml_run COMMAND...: run the training step in the background (so that the trap can run while
# it trains), wait for it through any TERM, and exit with its status.
aquaml_run() {
    echo "aquaml job: $*"
    if [ "$stop_requested" = 1 ]; then
        echo "aquaml job: TERM before the start; nothing to do"
        exit 0
    fi
    "$@" &
    step_pid=$!
    if [ "$stop_requested" = 1 ]; then forward_term; fi   # a TERM that came while it was being started
    local rc=0
    while :; do
        in_trap=0
        rc=0
        wait "$step_pid" || rc=$?
        # a trap interrupted the wait (status > 128): the step still runs, wait for its checkpoint
        if [ "$in_trap" = 1 ] && [ "$rc" -gt 128 ]; then continue; fi
        break
    done
    if [ "$stop_requested" = 1 ] && [ "$rc" = 0 ]; then
        echo "aquaml job: stopped with a checkpoint; resubmit this script (same job name) to continue"
    fi
    echo "aquaml job: step exited with status $rc at $(date '+%F %T')"
    exit "$rc"
}
