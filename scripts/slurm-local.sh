#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, from the distribution's own packages, for
# testing memcap's cluster profile (tests/test_slurm.py; CI runs it).
#
#   scripts/slurm-local.sh install   # root, Debian/Ubuntu: apt-get install slurmctld slurmd
#                                    # slurm-client munge (no-op when installed); the only
#                                    # step that changes the system's packages: the tests
#                                    # never run it, CI does (.ci/run)
#   scripts/slurm-local.sh up        # root: munge key, munged, /etc/slurm/slurm.conf for this
#                                    # host, slurmctld, slurmd; waits until the node is idle
#   scripts/slurm-local.sh down      # stops exactly the daemons `up` started (by their pids)
#                                    # and removes the slurm.conf `up` wrote
#   scripts/slurm-local.sh check     # exits 0 when a cluster brought up by `up` answers
#
# Why `down` removes slurm.conf: with the SLURM client installed, snakemake-executor-plugin-slurm
# runs `scontrol show config` when Snakemake loads it, which every `snakemake` command does
# (local runs included). With a slurm.conf naming a controller that is not running, scontrol
# waits about 9 s before it gives up; with no slurm.conf it fails at once. So a machine where
# the cluster is down costs Snakemake nothing, as before `up`.
#
# State, logs and pid files live in $MEMCAP_SLURM_DIR (default /tmp/memcap-slurm). The node
# has this host's CPUs and memory (less 1 GiB), no GPUs; jobs get DefMemPerCPU unless they ask
# for mem. There is no accounting database: sacct does not work, so the Snakemake executor
# is told to poll with squeue (profiles/slurm). Completed jobs are recorded by the scheduler in
# $MEMCAP_SLURM_DIR/jobs.txt (jobcomp/filetxt) and kept in slurmctld for an hour (MinJobAge).
# The config must be /etc/slurm/slurm.conf: the executor's job steps clear SLURM_* variables,
# SLURM_CONF included. `up` refuses to overwrite a slurm.conf it did not write.
set -euo pipefail

DIR=${MEMCAP_SLURM_DIR:-/tmp/memcap-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by memcap scripts/slurm-local.sh"

die() { echo "slurm-local: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "$1 needs root (it starts munged, slurmctld, slurmd)"; }

install() {
    need_root install
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || die "no apt-get: install SLURM (slurmctld, slurmd, client) and munge yourself"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: not overwriting a real cluster's config"
    fi
    mkdir -p /etc/slurm "$DIR/state" "$DIR/spool"
    cat > "$CONF" <<EOF
$MARK
ClusterName=memcap-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobs.txt
MinJobAge=3600
KillWait=30
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=memcap Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

up() {
    need_root up
    command -v slurmctld >/dev/null || die "SLURM is not installed: run '$0 install' (root, apt-get)"
    if check 2>/dev/null; then
        echo "slurm-local: already up ($DIR)"
        return 0
    fi
    write_conf
    # munge: a fresh key, the daemon as the munge user (its own sockets and logs)
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    [ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
    if ! munge -n >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
        cp /run/munge/munged.pid "$DIR/munged.pid"
    fi
    slurmctld -c  # a clean start: no jobs or nodes remembered from an earlier cluster
    slurmd
    for _ in $(seq 1 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            echo "slurm-local: up on $(hostname -s) ($(nproc) CPUs), state in $DIR"
            return 0
        fi
        sleep 0.5
    done
    cat "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
    die "the node did not become idle within 30 s (logs above)"
}

check() {
    [ -f "$CONF" ] && grep -qF "$MARK" "$CONF" && [ -f "$DIR/slurmctld.pid" ] \
        && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null \
        && sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
}

down() {
    need_root down
    local name pid
    for name in slurmd slurmctld munged; do
        [ -f "$DIR/$name.pid" ] || continue
        pid=$(cat "$DIR/$name.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$DIR/$name.pid"
    done
    # the config `up` wrote, never another cluster's (see the header: a slurm.conf naming a
    # controller that is not running costs every `snakemake` command about 9 s)
    if [ -f "$CONF" ] && grep -qF "$MARK" "$CONF"; then
        rm -f "$CONF"
    fi
    echo "slurm-local: down"
}

case "${1:-}" in
    install) install ;;
    up) up ;;
    down) down ;;
    check) check ;;
    *) die "usage: $0 install|up|down|check" ;;
esac
