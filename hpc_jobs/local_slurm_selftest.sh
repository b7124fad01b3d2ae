#!/usr/bin/env bash
# shellcheck disable=SC2015  # ok/ko always succeed
# local_slurm_selftest.sh -- TEST-ONLY: exercise the job features the project's
# tests rely on against the cluster started by hpc_jobs/local_slurm.sh.
#
#   hpc_jobs/local_slurm.sh start && hpc_jobs/local_slurm_selftest.sh [--with-timelimit]
#
# Checks: srun --mpi=pmi2 + mpi4py, mpiexec (pip MPICH) inside an allocation,
# job array, scancel --signal=TERM --batch, --requeue + scontrol requeue,
# FAILED final state via scontrol/jobcomp file, --cpus-per-task.
# --with-timelimit adds --time=1 --signal=B:TERM@50 (takes ~40 s more).
# Prints "N passed, N failed" and exits non-zero on any failure.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PY="${AQUAML_PYTHON:-$REPO/.venv/bin/python}"
MPIEXEC="${AQUAML_MPIEXEC:-$(dirname "$PY")/mpiexec}"
DIR="${AQUAML_SLURM_DIR:-/tmp/aquaml-slurm}"
export SLURM_CONF="${SLURM_CONF:-$DIR/etc/slurm.conf}"
WORK="$(mktemp -d /tmp/aquaml-slurm-selftest.XXXXXX)"
chmod 755 "$WORK"
cd "$WORK" || exit 1
mkdir -p logs
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "PASS $*"; }
ko() { FAIL=$((FAIL + 1)); echo "FAIL $*"; }

"$HERE/local_slurm.sh" status >/dev/null || { echo "cluster not running: run hpc_jobs/local_slurm.sh start" >&2; exit 2; }

job_state() { scontrol show job -o "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -n1; }
wait_done() { # wait_done JOBID SECS -> final state on stdout
    local j="$1" t="$2" s=""
    for _ in $(seq 1 $((t * 2))); do
        s="$(job_state "$j")"
        case "$s" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) break ;; esac
        sleep 0.5
    done
    echo "$s"
}
MPI_PRINT="from mpi4py import MPI; print(MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size())"

# 1. srun --mpi=pmi2 with mpi4py (pip MPICH wheel)
cat >t1.sh <<EOF
#!/bin/bash
#SBATCH --job-name=pmi2
#SBATCH --ntasks=3
#SBATCH --output=logs/%x_%j.out
srun --mpi=pmi2 $PY -c "$MPI_PRINT"
EOF
# 2. the pip wheel's hydra mpiexec inside the allocation (bootstraps via srun)
cat >t2.sh <<EOF
#!/bin/bash
#SBATCH --job-name=mpiexec
#SBATCH --ntasks=3
#SBATCH --output=logs/%x_%j.out
$MPIEXEC -n \$SLURM_NTASKS $PY -c "$MPI_PRINT"
EOF
# 3. job array
cat >t3.sh <<'EOF'
#!/bin/bash
#SBATCH --job-name=arr
#SBATCH --array=0-1
#SBATCH --output=logs/%x_%A_%a.out
echo "task=$SLURM_ARRAY_TASK_ID"
EOF
# 6. cpus-per-task
cat >t6.sh <<'EOF'
#!/bin/bash
#SBATCH --job-name=cpt
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --output=logs/%x_%j.out
echo "cpt=$SLURM_CPUS_PER_TASK"
EOF
# 4/5. a long-running script that traps TERM
cat >trap.sh <<'EOF'
#!/bin/bash
#SBATCH --ntasks=1
#SBATCH --open-mode=append
#SBATCH --output=logs/%x_%j.out
start=$(date +%s)
echo "run restart=${SLURM_RESTART_COUNT:-0}"
trap 'echo "got TERM after $(( $(date +%s) - start ))s"; exit 0' TERM
for i in $(seq 1 300); do sleep 1 & wait $!; done
echo "no signal"
EOF
cat >fail.sh <<'EOF'
#!/bin/bash
#SBATCH --job-name=fail
#SBATCH --output=logs/%x_%j.out
set -e
false
EOF

j1=$(sbatch --parsable t1.sh)
j2=$(sbatch --parsable t2.sh)
j3=$(sbatch --parsable t3.sh)
j6=$(sbatch --parsable t6.sh)
jf=$(sbatch --parsable fail.sh)
js=$(sbatch --parsable --job-name=sig trap.sh)
jr=$(sbatch --parsable --job-name=rq --requeue trap.sh)
if [ "${1:-}" = "--with-timelimit" ]; then
    jt=$(sbatch --parsable --job-name=tl --time=1 --signal=B:TERM@50 trap.sh)
fi

[ "$(wait_done "$j1" 60)" = COMPLETED ] && [ "$(sort logs/pmi2_"$j1".out | tr '\n' ' ')" = "0 3 1 3 2 3 " ] &&
    ok "srun --mpi=pmi2: 3 ranks of size 3" || ko "srun --mpi=pmi2: $(cat logs/pmi2_"$j1".out 2>&1)"
[ "$(wait_done "$j2" 60)" = COMPLETED ] && [ "$(grep -c ' 3$' logs/mpiexec_"$j2".out)" = 3 ] &&
    ok "mpiexec -n \$SLURM_NTASKS: 3 ranks of size 3" || ko "mpiexec: $(cat logs/mpiexec_"$j2".out 2>&1)"
wait_done "${j3}_0" 60 >/dev/null
wait_done "${j3}_1" 60 >/dev/null
[ "$(cat logs/arr_"$j3"_0.out logs/arr_"$j3"_1.out 2>/dev/null | tr '\n' ' ')" = "task=0 task=1 " ] &&
    ok "--array=0-1" || ko "--array=0-1"
[ "$(wait_done "$j6" 60)" = COMPLETED ] && grep -qx 'cpt=2' logs/cpt_"$j6".out &&
    ok "--cpus-per-task=2 -> SLURM_CPUS_PER_TASK=2" || ko "--cpus-per-task"
[ "$(wait_done "$jf" 60)" = FAILED ] && grep -q "JobId=$jf .*JobState=FAILED" "$DIR/log/jobcomp.txt" &&
    ok "set -e; false -> FAILED (scontrol + jobcomp file)" || ko "FAILED state: $(job_state "$jf")"

# scancel --signal=TERM --batch reaches the batch shell's trap
for _ in $(seq 1 40); do grep -q '^run' logs/sig_"$js".out 2>/dev/null && break; sleep 0.25; done
scancel --signal=TERM --batch "$js"
[ "$(wait_done "$js" 30)" = COMPLETED ] && grep -q 'got TERM' logs/sig_"$js".out &&
    ok "scancel --signal=TERM --batch -> trap ran" || ko "scancel -b TERM: $(cat logs/sig_"$js".out)"

# scontrol requeue: held ~cred_expire (10 s) then rerun with SLURM_RESTART_COUNT=1
for _ in $(seq 1 40); do grep -q '^run' logs/rq_"$jr".out 2>/dev/null && break; sleep 0.25; done
scontrol requeue "$jr"
for _ in $(seq 1 120); do grep -q 'restart=1' logs/rq_"$jr".out 2>/dev/null && break; sleep 0.5; done
grep -q 'restart=1' logs/rq_"$jr".out && ok "scontrol requeue -> rerun (restart=1)" || ko "requeue: $(cat logs/rq_"$jr".out)"
scancel "$jr"

if [ -n "${jt:-}" ]; then
    [ "$(wait_done "$jt" 90)" = COMPLETED ] && grep -q 'got TERM' logs/tl_"$jt".out &&
        ok "--time=1 --signal=B:TERM@50 -> $(grep 'got TERM' logs/tl_"$jt".out)" || ko "--signal=B:TERM@50: $(cat logs/tl_"$jt".out)"
fi

rm -rf "$WORK"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
