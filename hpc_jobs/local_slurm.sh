#!/usr/bin/env bash
# word splitting of pid/job-id lists below is intentional
# shellcheck disable=SC2046,SC2086
# local_slurm.sh -- a real, private, one-node SLURM cluster on this machine.
#
#   hpc_jobs/local_slurm.sh start    # install (root only) + start munged, slurmctld, slurmd
#   hpc_jobs/local_slurm.sh stop     # stop everything `start` started (bounded waits)
#   hpc_jobs/local_slurm.sh status   # exit 0 iff sinfo answers and the node is usable
#   hpc_jobs/local_slurm.sh env      # print `export SLURM_CONF=...` (eval-able)
#
# TEST-ONLY tool: it exists so the project's tests/CI can exercise the SLURM
# launch path (sbatch/srun/job arrays/signals/requeue) against a real slurmctld
# on a single machine.  It is not a template for a production site.
#
# Everything lives under $AQUAML_SLURM_DIR (default /tmp/aquaml-slurm): the
# slurm.conf, a private munge key + socket, state/spool dirs, logs and pid
# files, so it never touches /etc/slurm, /etc/munge or a system munged.
# Clients find the cluster through SLURM_CONF=$AQUAML_SLURM_DIR/etc/slurm.conf
# (sbatch, srun, squeue, sinfo, scontrol, scancel and the daemons all honour
# SLURM_CONF; batch jobs inherit it because sbatch exports the environment).
#
# Exit codes of `start`: 0 running (or already running); 3 cannot run here
# (not root and slurm/munge missing, or not root at all) -- one-line reason on
# stderr, meant for tests to report "skipped: <reason>"; 1 start failed.
#
# Tunables (environment):
#   AQUAML_SLURM_DIR          private directory           [/tmp/aquaml-slurm]
#   AQUAML_SLURM_CPUS         CPUs declared for the node  [8]   (may exceed nproc)
#   AQUAML_SLURM_MEM_MB       RealMemory of the node      [4096]
#   AQUAML_SLURM_CTLD_PORT    slurmctld port              [6817]
#   AQUAML_SLURM_SLURMD_PORT  slurmd port                 [6818]
#   AQUAML_SLURM_START_TIMEOUT seconds to wait for idle   [60]
set -u

DIR="${AQUAML_SLURM_DIR:-/tmp/aquaml-slurm}"
CPUS="${AQUAML_SLURM_CPUS:-8}"
MEM_MB="${AQUAML_SLURM_MEM_MB:-4096}"
CTLD_PORT="${AQUAML_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${AQUAML_SLURM_SLURMD_PORT:-6818}"
START_TIMEOUT="${AQUAML_SLURM_START_TIMEOUT:-60}"

CONF="$DIR/etc/slurm.conf"
MUNGE_DIR="$DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
MUNGE_KEY="$MUNGE_DIR/munge.key"
RUN_DIR="$DIR/run"
LOG_DIR="$DIR/log"
# Every daemon we start carries this variable in its environment (slurmstepd
# inherits it from slurmd), which lets `stop` find exactly our processes
# without matching on process names.
MARKER_VAR="AQUAML_LOCAL_SLURM_DAEMON"

log() { echo "local_slurm: $*" >&2; }
die() { log "$*"; exit 1; }
skip() { echo "local_slurm: $*" >&2; exit 3; }

is_root() { [ "$(id -u)" -eq 0 ]; }

have_binaries() {
    command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 &&
        command -v munged >/dev/null 2>&1 && command -v sbatch >/dev/null 2>&1 &&
        command -v sinfo >/dev/null 2>&1
}

# /proc check (not kill -0) so that non-root callers can see root daemons too
pid_alive() { [ -n "${1:-}" ] && [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
pid_from_file() { [ -s "$1" ] && tr -dc '0-9' <"$1"; }

# pids of processes carrying our marker (daemons + slurmstepd), for this DIR only
marked_pids() {
    local p env
    for p in /proc/[0-9]*; do
        env="$p/environ"
        [ -r "$env" ] || continue
        if { tr '\0' '\n' <"$env"; } 2>/dev/null | grep -qxF "$MARKER_VAR=$DIR"; then
            echo "${p#/proc/}"
        fi
    done
}

# ---------------------------------------------------------------- install ---
ensure_installed() {
    have_binaries && return 0
    is_root || skip "slurm-wlm/munge not installed and not root (cannot apt-get install)"
    command -v apt-get >/dev/null 2>&1 || skip "slurm-wlm/munge not installed and no apt-get"
    log "installing slurm-wlm and munge with apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    # Debian's postinst scripts may try to start the *system* munge/slurm
    # services; they have no config and are irrelevant to us (private socket,
    # private config), so their failure is harmless.
    if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >"$DIR/apt-install.log" 2>&1; then
        apt-get update -q >>"$DIR/apt-install.log" 2>&1 || true
        apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$DIR/apt-install.log" 2>&1 ||
            die "apt-get install slurm-wlm munge failed (see $DIR/apt-install.log)"
    fi
    have_binaries || die "slurm binaries still missing after install (see $DIR/apt-install.log)"
}

# ------------------------------------------------------------------ munge ---
start_munge() {
    local pid
    pid="$(pid_from_file "$RUN_DIR/munged.pid")"
    if pid_alive "$pid" && munge -n --socket="$MUNGE_SOCKET" 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$MUNGE_DIR"
    # 755 so that non-root clients can reach the socket; the key itself is 0400.
    chmod 755 "$DIR" "$MUNGE_DIR"
    if [ ! -s "$MUNGE_KEY" ]; then
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_KEY" || die "mungekey failed"
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none || die "cannot create munge key"
        fi
    fi
    chmod 400 "$MUNGE_KEY"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    # root-run munged on a private socket; --force tolerates the /tmp parent
    # being world-writable (sticky), which munged's path checks otherwise refuse.
    env "$MARKER_VAR=$DIR" munged --force \
        --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" \
        --pid-file="$RUN_DIR/munged.pid" --log-file="$LOG_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" </dev/null >>"$LOG_DIR/munged.start.log" 2>&1 9>&- ||
        die "munged failed to start (see $LOG_DIR/munged.log, $LOG_DIR/munged.start.log)"
    for _ in $(seq 1 50); do
        if munge -n --socket="$MUNGE_SOCKET" 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    die "munged does not answer on $MUNGE_SOCKET"
}

# ------------------------------------------------------------- slurm.conf ---
write_conf() {
    local node
    node="$(hostname -s)"
    mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool" "$RUN_DIR" "$LOG_DIR"
    # An empty plugstack.conf next to slurm.conf keeps the system one
    # (/etc/slurm/plugstack.conf) out of our cluster.
    : >"$DIR/etc/plugstack.conf"
    cat >"$CONF" <<EOF
# Generated by hpc_jobs/local_slurm.sh -- TEST-ONLY single-node cluster.
ClusterName=aquaml-local
# --- site-specific: one host, everything on loopback ---
SlurmctldHost=${node}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire (default 120 s) is also how long a requeued job is held
# (Reason=BeginTime) before it may start again: keep it short for tests.
AuthInfo=socket=${MUNGE_SOCKET},cred_expire=10
# --- private state/spool/log/pid paths (never the Debian defaults) ---
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool
SlurmctldPidFile=${RUN_DIR}/slurmctld.pid
SlurmdPidFile=${RUN_DIR}/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
PlugStackConfig=${DIR}/etc/plugstack.conf
# --- container-friendly plugins: no cgroups, no CPU binding ---
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobContainerType=job_container/none
SwitchType=switch/none
MpiDefault=none
# --- scheduling: cores are the unit; node declares more CPUs than exist ---
SchedulerType=sched/backfill
# test-only: re-scan pending jobs every few seconds (defaults 60 s / 30 s)
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
# --- test-only: make job states/features observable without slurmdbd ---
# finished jobs stay visible to 'scontrol show job' for 10 minutes
MinJobAge=600
# final states are also appended to a flat file (one line per job)
JobCompType=jobcomp/filetxt
JobCompLoc=${LOG_DIR}/jobcomp.txt
JobRequeue=1
# short grace period between SIGTERM and SIGKILL at the time limit / scancel
KillWait=10
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
Waittime=0
MailProg=/bin/true
SlurmctldDebug=info
SlurmdDebug=info
NodeName=${node} NodeHostname=${node} NodeAddr=127.0.0.1 CPUs=${CPUS} Sockets=1 CoresPerSocket=${CPUS} ThreadsPerCore=1 RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    chmod 644 "$CONF"
}

# ---------------------------------------------------------------- helpers ---
node_state() {
    SLURM_CONF="$CONF" timeout 10 sinfo -h -N -o '%t' 2>/dev/null | head -n1
}

daemons_alive() {
    pid_alive "$(pid_from_file "$RUN_DIR/slurmctld.pid")" &&
        pid_alive "$(pid_from_file "$RUN_DIR/slurmd.pid")" &&
        pid_alive "$(pid_from_file "$RUN_DIR/munged.pid")"
}

cluster_ok() {
    local st
    daemons_alive || return 1
    st="$(node_state)"
    case "$st" in
        idle* | mix* | alloc* | comp*) return 0 ;;
        *) return 1 ;;
    esac
}

print_env() {
    echo "SLURM_CONF=$CONF"
    echo "# use: export SLURM_CONF=$CONF" >&2
}

# ------------------------------------------------------------------ start ---
cmd_start() {
    if [ -s "$CONF" ] && cluster_ok; then
        log "already running (node $(node_state))"
        print_env
        return 0
    fi
    if ! is_root; then
        have_binaries || skip "slurm-wlm/munge not installed and not root (cannot apt-get install)"
        skip "not root: cannot start slurmctld/slurmd/munged (SlurmUser=root)"
    fi
    mkdir -p "$DIR"
    ensure_installed
    # a half-started previous instance: clean it up first
    if [ -n "$(marked_pids)" ]; then
        log "stopping leftovers of a previous instance"
        cmd_stop >/dev/null 2>&1 || true
    fi
    write_conf
    start_munge
    export SLURM_CONF="$CONF"
    # -c: clean start, discard any previously saved job state.
    env "$MARKER_VAR=$DIR" SLURM_CONF="$CONF" slurmctld -c -f "$CONF" </dev/null >>"$LOG_DIR/slurmctld.start.log" 2>&1 9>&- ||
        die "slurmctld failed to start (see $LOG_DIR/slurmctld.log)"
    # slurmd must find itself in slurm.conf: pass the node name explicitly.
    env "$MARKER_VAR=$DIR" SLURM_CONF="$CONF" slurmd -f "$CONF" -N "$(hostname -s)" </dev/null >>"$LOG_DIR/slurmd.start.log" 2>&1 9>&- ||
        die "slurmd failed to start (see $LOG_DIR/slurmd.log)"

    local deadline st
    deadline=$((SECONDS + START_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        st="$(node_state)"
        case "$st" in
            idle*) break ;;
            drain* | down* | drng* | fail*)
                # leftover reason from an earlier run: put the node back
                scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    if [ "$(node_state)" != "idle" ]; then
        log "node not idle after ${START_TIMEOUT}s (state '$(node_state)'); logs in $LOG_DIR"
        tail -n 5 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 2>/dev/null
        return 1
    fi
    log "cluster up: node $(hostname -s) idle, $CPUS CPUs, partition debug"
    print_env
}

# ------------------------------------------------------------------- stop ---
wait_gone() { # wait_gone SECS PID...
    local secs="$1" p alive
    shift
    for _ in $(seq 1 $((secs * 10))); do
        alive=0
        for p in "$@"; do pid_alive "$p" && alive=1; done
        [ "$alive" -eq 0 ] && return 0
        sleep 0.1
    done
    return 1
}

cmd_stop() {
    local ctld slurmd_pid munged_pid p
    ctld="$(pid_from_file "$RUN_DIR/slurmctld.pid")"
    slurmd_pid="$(pid_from_file "$RUN_DIR/slurmd.pid")"
    munged_pid="$(pid_from_file "$RUN_DIR/munged.pid")"
    if [ -s "$CONF" ] && pid_alive "$ctld"; then
        export SLURM_CONF="$CONF"
        # cancel every job first so job steps (and their processes) end cleanly
        if [ -n "$(timeout 10 squeue -h -o %i 2>/dev/null)" ]; then
            timeout 10 scancel --full --signal=KILL $(timeout 10 squeue -h -o %A 2>/dev/null) >/dev/null 2>&1 || true
            timeout 10 scancel $(timeout 10 squeue -h -o %A 2>/dev/null) >/dev/null 2>&1 || true
            for _ in $(seq 1 30); do
                [ -z "$(timeout 5 squeue -h -t R,CG,S -o %i 2>/dev/null)" ] && break
                sleep 0.5
            done
        fi
        timeout 10 scontrol shutdown >/dev/null 2>&1 || true
    fi
    for p in $slurmd_pid $ctld; do pid_alive "$p" && kill -TERM "$p" 2>/dev/null; done
    wait_gone 15 $slurmd_pid $ctld || for p in $slurmd_pid $ctld; do pid_alive "$p" && kill -KILL "$p" 2>/dev/null; done
    # slurmstepd processes (and stray daemons) that carry our marker
    for p in $(marked_pids); do [ "$p" != "$munged_pid" ] && kill -KILL "$p" 2>/dev/null; done
    if pid_alive "$munged_pid"; then
        kill -TERM "$munged_pid" 2>/dev/null
        wait_gone 10 "$munged_pid" || kill -KILL "$munged_pid" 2>/dev/null
    fi
    for p in $(marked_pids); do kill -KILL "$p" 2>/dev/null; done
    wait_gone 5 $(marked_pids) || true
    rm -f "$RUN_DIR"/*.pid "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" 2>/dev/null
    if [ -n "$(marked_pids)" ]; then
        log "processes still alive: $(marked_pids | tr '\n' ' ')"
        return 1
    fi
    log "stopped"
}

cmd_status() {
    if [ -s "$CONF" ] && cluster_ok; then
        echo "running: SLURM_CONF=$CONF node=$(hostname -s) state=$(node_state)"
        return 0
    fi
    echo "not running (dir $DIR)"
    return 1
}

# serialise concurrent start/stop calls (e.g. parallel test sessions); the
# daemons are started with fd 9 closed so they never inherit the lock.
take_lock() {
    is_root || return 0
    mkdir -p "$DIR" && exec 9>"$DIR/.lock" || return 0
    command -v flock >/dev/null 2>&1 && flock -w 120 9
}

case "${1:-}" in
    start) take_lock; cmd_start ;;
    stop) take_lock; cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *)
        echo "usage: $0 {start|stop|status|env}" >&2
        exit 2
        ;;
esac
