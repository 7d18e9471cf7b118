#!/usr/bin/env bash
# A throw-away single-node Slurm on this machine, for tests and for trying the cluster
# profile without a cluster: munge, MariaDB + slurmdbd (so `sacct` works), slurmctld and
# slurmd, all from Debian's packages, all state under one directory.
#
#   workflow/scripts/slurm_cluster.sh up   STATE_DIR   # install what is missing, start, wait until usable
#   workflow/scripts/slurm_cluster.sh down STATE_DIR   # stop exactly the daemons `up` started, by PID
#   workflow/scripts/slurm_cluster.sh env  STATE_DIR   # print `export SLURM_CONF=...` for this cluster
#
# Needs root and apt-get (Debian). `up` on a running STATE_DIR and `down` on a stopped one
# do nothing. While the cluster is up, /etc/slurm/slurm.conf is a symlink to
# STATE_DIR/etc/slurm.conf: the Snakemake SLURM plugin unsets SLURM_CONF inside its job
# step, so `srun` only finds the default path. `up` refuses to replace a real file there
# (a machine that already belongs to a Slurm cluster), and `down` removes only its own link.
set -euo pipefail

die() { echo "slurm_cluster.sh: ERROR: $*" >&2; exit 1; }
say() { echo "slurm_cluster.sh: $*" >&2; }
T0=$(date +%s%N)
step() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf 'slurm_cluster.sh: [%d.%01ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*" >&2; }

usage() { die "usage: $0 up|down|env STATE_DIR"; }
[ $# -eq 2 ] || usage
cmd=$1
mkdir -p -- "$2" 2>/dev/null || die "cannot create state directory '$2'"
STATE=$(cd -- "$2" && pwd -P)

ETC=$STATE/etc
PIDS=$STATE/pids            # lines "name pid", in start order
LOG=$STATE/log
MUNGE_DIR=$STATE/munge      # must be mode 755: munged refuses a socket dir others cannot enter
MUNGE_SOCK=$MUNGE_DIR/munge.socket.2
DB_DIR=$STATE/mysql
DB_SOCK=$STATE/run/mysqld.sock
SYS_CONF=/etc/slurm/slurm.conf
CONF=$ETC/slurm.conf

# Unix socket paths are limited to 107 bytes.
[ ${#MUNGE_SOCK} -lt 100 ] || die "state directory path too long for a unix socket: $STATE"

# ---------------------------------------------------------------------------------------
alive() {  # alive NAME PID: the PID exists and is still that program (guards PID reuse)
    local comm stat
    [[ "$2" =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$2/stat" 2>/dev/null) || return 1
    [[ "${stat##*) }" != Z* ]] || return 1      # a zombie has exited
    comm=$(cat "/proc/$2/comm" 2>/dev/null) || return 1
    [[ "$1" == "$comm"* || "$comm" == "$1"* ]]
}

record() { echo "$1 $2" >>"$PIDS"; }

start() {  # start NAME LOGFILE CMD...: run a daemon in the foreground of its own session
    local name=$1 logf=$2; shift 2
    setsid "$@" >>"$logf" 2>&1 </dev/null &
    local pid=$!
    record "$name" "$pid"
    sleep 0.2
    alive "$name" "$pid" || { tail -n 20 "$logf" >&2 || true; die "$name exited at start (log: $logf)"; }
}

wait_for() {  # wait_for SECONDS WHAT CMD...: poll until CMD succeeds
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

free_ports() {  # free_ports N: N distinct free TCP ports on 127.0.0.1, one line
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
}

all_alive() {
    [ -s "$PIDS" ] || return 1
    local name pid
    while read -r name pid; do alive "$name" "$pid" || return 1; done <"$PIDS"
}

# ---------------------------------------------------------------------------------------
install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    command -v mariadb >/dev/null || missing+=(mariadb-client)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v python3 >/dev/null || missing+=(python3)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    say "installing Debian packages: ${missing[*]}"
    # policy-rc.d stops the packages' init scripts from starting system-wide daemons.
    local prc=/usr/sbin/policy-rc.d made_prc=0
    if [ ! -e $prc ]; then printf '#!/bin/sh\nexit 101\n' >$prc; chmod 755 $prc; made_prc=1; fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}"; } >"$STATE/apt.log" 2>&1 || rc=$?
    [ $made_prc = 1 ] && rm -f $prc
    [ $rc = 0 ] || { tail -n 20 "$STATE/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $STATE/apt.log)"; }
}

write_configs() {
    local host cpus mem nodeline
    host=$(hostname -s)
    # slurmd -C reports this machine's real geometry; a NodeName line that claims more
    # than the node has gets it drained.
    nodeline=$(slurmd -C | head -n 1)
    [[ "$nodeline" == NodeName=* ]] || die "'slurmd -C' gave no node line: $nodeline"
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$nodeline")
    nodeline=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 9 / 10))/" <<<"$nodeline")
    local ctld_port d_port dbd_port db_port
    read -r ctld_port d_port dbd_port db_port <<<"$(free_ports 4)"
    echo "$db_port" >"$STATE/db_port"

    cat >"$CONF" <<EOF
# Generated by workflow/scripts/slurm_cluster.sh for a throw-away single-node cluster.
ClusterName=nla
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
CredType=cred/munge
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd, no cgroups here.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job without --mem would otherwise hold all the node's memory and run alone.
DefMemPerCPU=500
ReturnToService=2
MinJobAge=300
InactiveLimit=0
KillWait=5
# Accounting through slurmdbd, so that sacct works (the plugin polls sacct).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
AccountingStoragePass=$MUNGE_SOCK
# The plugin puts the rule name into the job comment; store it so sacct shows it.
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
$nodeline NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

    cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"   # slurmdbd refuses a readable config
}

link_system_conf() {
    mkdir -p /etc/slurm
    if [ -L "$SYS_CONF" ]; then
        local target
        target=$(readlink "$SYS_CONF")
        if [ "$target" != "$CONF" ]; then
            local other=${target%/etc/slurm.conf}
            if [ "$other" != "$target" ] && [ -f "$other/pids" ] && (STATE=$other; PIDS=$other/pids; all_alive); then
                die "$SYS_CONF points to another running test cluster ($other); stop it first: $0 down $other"
            fi
            say "replacing stale link $SYS_CONF -> $target"
        fi
        ln -sfn "$CONF" "$SYS_CONF"
    elif [ -e "$SYS_CONF" ]; then
        die "$SYS_CONF exists and is not ours: this machine seems to have a real Slurm config; refusing to replace it"
    else
        ln -s "$CONF" "$SYS_CONF"
    fi
    echo "$SYS_CONF" >"$STATE/linked"
}

up() {
    [ "$(id -u)" = 0 ] || die "must run as root (starts system daemons, links $SYS_CONF)"
    if all_alive; then say "already up ($STATE)"; return 0; fi
    if [ -s "$PIDS" ]; then
        say "half-up cluster in $STATE; stopping it first"
        down
    fi
    install_packages
    rm -rf -- "$ETC" "$LOG" "$STATE/run" "$STATE/spool" "$MUNGE_DIR" "$DB_DIR"
    mkdir -p "$ETC" "$LOG" "$STATE/run" "$STATE/spool/ctld" "$STATE/spool/d" "$MUNGE_DIR" "$DB_DIR"
    chmod 755 "$STATE" "$MUNGE_DIR"
    : >"$PIDS"
    write_configs
    link_system_conf
    export SLURM_CONF=$CONF

    step "starting munged"
    dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
    chmod 400 "$MUNGE_DIR/munge.key"
    start munged "$LOG/munged.out" munged -F --force --socket="$MUNGE_SOCK" \
        --key-file="$MUNGE_DIR/munge.key" --pid-file="$MUNGE_DIR/munged.pid" \
        --log-file="$LOG/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
    wait_for 10 munge bash -c "munge -S '$MUNGE_SOCK' -n | unmunge -S '$MUNGE_SOCK'" \
        || die "munged does not answer on $MUNGE_SOCK (log: $LOG/munged.log)"

    step "initialising MariaDB"
    mariadb-install-db --no-defaults --user=root --datadir="$DB_DIR" --skip-test-db \
        --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1 \
        || { tail -n 20 "$LOG/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    step "starting mariadbd"
    start mariadbd "$LOG/mariadbd.log" mariadbd --no-defaults --user=root --datadir="$DB_DIR" \
        --socket="$DB_SOCK" --pid-file="$STATE/run/mariadbd.pid" --bind-address=127.0.0.1 \
        --port="$(cat "$STATE/db_port")" --skip-name-resolve --innodb-buffer-pool-size=64M \
        --innodb-log-file-size=16M --skip-log-bin
    wait_for 30 mariadb mariadb --no-defaults --socket="$DB_SOCK" -u root -e 'SELECT 1' \
        || { tail -n 20 "$LOG/mariadbd.log" >&2; die "MariaDB did not come up (log: $LOG/mariadbd.log)"; }
    step "creating the slurm database user"
    mariadb --no-defaults --socket="$DB_SOCK" -u root -e "
        CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" \
        || die "could not create the slurm database user"

    step "starting slurmdbd"
    start slurmdbd "$LOG/slurmdbd.out" slurmdbd -D
    wait_for 30 slurmdbd sacctmgr -i list cluster \
        || { tail -n 20 "$LOG/slurmdbd.log" >&2; die "slurmdbd does not answer (log: $LOG/slurmdbd.log)"; }
    sacctmgr -i add cluster nla >/dev/null 2>&1 || true
    step "starting slurmctld"
    start slurmctld "$LOG/slurmctld.out" slurmctld -D -i
    wait_for 30 slurmctld scontrol ping \
        || { tail -n 20 "$LOG/slurmctld.log" >&2; die "slurmctld does not answer (log: $LOG/slurmctld.log)"; }
    step "starting slurmd"
    start slurmd "$LOG/slurmd.out" slurmd -D
    wait_for 30 "node idle" bash -c "sinfo -h -N -o %t | grep -qx idle" \
        || { sinfo -N -l >&2 || true; tail -n 20 "$LOG/slurmd.log" >&2; die "node did not become idle (log: $LOG/slurmd.log)"; }
    step "checking sacct"
    sacct -n -a >/dev/null || die "sacct does not work (log: $LOG/slurmdbd.log)"
    step "up: partition 'debug', node $(hostname -s); state in $STATE"
}

stop_wave() {  # stop_wave NAME...: SIGTERM the recorded daemons of these names, wait, then SIGKILL
    local name pid want targets=()
    while read -r name pid; do
        for want in "$@"; do
            if [ "$name" = "$want" ] && alive "$name" "$pid"; then
                kill -TERM "$pid" 2>/dev/null || true
                targets+=("$name:$pid")
            fi
        done
    done <"$PIDS"
    local t
    for t in "${targets[@]}"; do
        for _ in $(seq 75); do alive "${t%%:*}" "${t##*:}" || break; sleep 0.2; done
        if alive "${t%%:*}" "${t##*:}"; then
            say "${t%%:*} (${t##*:}) ignored SIGTERM for 15 s; sending SIGKILL"
            kill -KILL "${t##*:}" 2>/dev/null || true
        fi
    done
}

down() {
    local name pid
    if [ -s "$PIDS" ]; then
        # Jobs first: their slurmstepd processes are children of slurmd, not in our PID list.
        if [ -f "$CONF" ] && alive slurmctld "$(awk '$1=="slurmctld"{print $2}' "$PIDS")"; then
            SLURM_CONF=$CONF timeout 10 scancel --full -u root >/dev/null 2>&1 || true
            sleep 1
        fi
        # Two waves, each in parallel: the Slurm daemons, then slurmdbd, MariaDB and munge.
        stop_wave slurmd slurmctld
        stop_wave slurmdbd mariadbd munged
        rm -f "$PIDS"
    fi
    if [ -L "$SYS_CONF" ] && [ "$(readlink "$SYS_CONF")" = "$CONF" ]; then
        rm -f "$SYS_CONF"
    fi
    rm -f "$STATE/linked"
}

case $cmd in
    up) up ;;
    down) down; say "down ($STATE)" ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) usage ;;
esac
