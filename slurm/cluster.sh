#!/usr/bin/env bash
# cluster.sh -- a real multi-node Slurm test cluster on one Debian 12 machine: Slurm 22.05 from
# bookworm's packages (default), or `--slurm 24.11` from a Debian trixie root filesystem that
# `install --slurm 24.11` builds once (daemons and clients then run chrooted into it).
#
# Layout: the controller side (munged, MariaDB, slurmdbd, slurmctld) runs in the
# root network namespace behind a bridge (CTL_ADDR, default 10.200.0.1/24); every
# node nodeN runs its slurmd in its own network + UTS + mount namespace with a
# veth into that bridge (10.200.0.(10+N)), hostname nodeN and a private hosts
# file. Clients (sbatch, squeue, sacct, scontrol, submitit) work from the
# ordinary root shell with only SLURM_CONF set (see ROOT/env.sh).
#
# Usage: see `cluster.sh help` or slurm/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONF_DIR=$HERE/conf
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server iproute2 util-linux)

ROOT=${HPC_SFT_SLURM_ROOT:-/tmp/hpc-sft-slurm}
NODES=4
MAX_NODES=64
NET=${HPC_SFT_SLURM_NET:-10.200.0}            # first three octets of the private /24
CTL_ADDR=$NET.1
# One prefix names every machine-wide object, so a second cluster (other prefix, ROOT, NET and ports) can run
# beside the default one. Default "hsft": hsft-ctl, hsft-br0, hsft-node1.., hsftv1.., cluster hpcsft.
PREFIX=${HPC_SFT_SLURM_PREFIX:-hsft}
[[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || { echo "[cluster.sh] ERROR: HPC_SFT_SLURM_PREFIX must be 1-8 of [a-z0-9], starting with a letter" >&2; exit 1; }
CTL_NAME=$PREFIX-ctl                          # controller's hostname inside its UTS namespace
BRIDGE=$PREFIX-br0
NS_PREFIX=$PREFIX-                            # netns names: hsft-node1 ..
VETH_PREFIX=${PREFIX}v                        # host-side veths: hsftv1 ..
CLUSTER=hpcsft
[[ $PREFIX == hsft ]] || CLUSTER=hpcsft$PREFIX
CTLD_PORT=${HPC_SFT_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${HPC_SFT_SLURM_SLURMD_PORT:-6818}
DBD_PORT=${HPC_SFT_SLURM_DBD_PORT:-6819}
DB_PORT=${HPC_SFT_SLURM_DB_PORT:-6820}        # MariaDB, bound to 127.0.0.1 only
DB_USER=slurm
DB_PASS=hpcsft-test-only
GRACE_TIME=${HPC_SFT_SLURM_GRACE_TIME:-30}    # seconds between the preemption signal and TERM
WAIT_S=${HPC_SFT_SLURM_WAIT_S:-60}            # bound for every wait loop in `up`
LOCK_FILE=/tmp/hpc-sft-slurm.lock             # serialises up/down (e.g. pytest-xdist workers)
[[ $PREFIX == hsft ]] || LOCK_FILE=/tmp/hpc-sft-slurm-$PREFIX.lock
# Slurm version: 22.05 = bookworm's packages on this machine; 24.11 = Debian trixie's, in FS_ROOT (chroot).
SLURM_VERSION=${HPC_SFT_SLURM_VERSION:-}      # empty: 22.05 for up/install, else what ROOT/state records
VERSIONS="22.05 24.11"
FS_ROOT=${HPC_SFT_SLURM_FS_ROOT:-/var/cache/hpc-sft/trixie-slurm24.11}
FS_MIRROR=${HPC_SFT_SLURM_FS_MIRROR:-http://deb.debian.org/debian}
FS_SUITE=trixie
FS_MARK=etc/hpc-sft-slurm-root-fs             # in FS_ROOT: its package list; "inside it" for the wrappers
# What the trixie root holds: Slurm 24.11 + munge + MariaDB + Lua 5.1 (job_submit/lua), and the shared
# libraries that the machine's own Python (/root/.pyenv, the project's venv, torch) needs when a job runs it there.
FS_PACKAGES=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server mariadb-client liblua5.1-0 procps
    libssl3t64 libreadline8t64 libncursesw6 libsqlite3-0 libffi8 libgomp1 libstdc++6 libtirpc3t64 libnsl2
    libgssapi-krb5-2 libbz2-1.0 liblzma5 libuuid1 libexpat1 zlib1g)
# Folders of this machine that jobs and clients see at the same paths inside FS_ROOT: these, this checkout
# (wherever it was cloned) and HPC_SFT_SLURM_SHARE (colon-separated: a venv, its Python, data) -- see fs_shared.
FS_SHARED="/dev /proc /sys /tmp /work /root /home /run/netns"
FS_OWN="/usr /bin /sbin /lib /lib32 /lib64 /libx32 /etc /var /boot"   # the trixie root's own: never shared
FS_BUILD_WAIT_S=${HPC_SFT_SLURM_FS_BUILD_WAIT_S:-1200}
CLIENTS="sbatch squeue scontrol sacct sinfo scancel srun salloc sacctmgr sattach sbcast sdiag sprio sreport sshare sstat strigger"
LOCK_WAIT_S=300
DAEMONS="munged mariadbd slurmdbd slurmctld slurmd slurmstepd"
OWNER_TAG=hpc-sft-slurm                       # bridge alias prefix: marks what we created
MARKER=.hpc-sft-slurm-root                    # file in ROOT: only such a ROOT is ever deleted

# ---------------------------------------------------------------- helpers

log() { echo "[cluster.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    cat <<EOF
usage: $0 COMMAND [OPTIONS]
  install [--slurm V]              apt-get install the packages (skips if installed);
                                   --slurm 24.11: build the trixie root filesystem (skips if built)
  up [--nodes N] [--root DIR] [--slurm V]  start the cluster (idempotent), print ROOT/env.sh
  down [--root DIR] [--keep-logs]  stop everything it started, remove ROOT
  status [--root DIR]              exit 0 and print sinfo if up, 1 otherwise
  exec [--root DIR] -- CMD...      run CMD with ROOT/env.sh sourced
  kill-node N [--root DIR]         node N dies: SIGKILL its slurmd and every process on it
  start-node N [--root DIR]        start node N's slurmd again and wait until it is idle
  can-run [--slurm V]              exit 0 if this machine can run the cluster
ROOT defaults to \$HPC_SFT_SLURM_ROOT or /tmp/hpc-sft-slurm; N defaults to 4.
V (Slurm version): 22.05 (default, bookworm's packages) or 24.11 (Debian trixie's, in
$FS_ROOT); default \$HPC_SFT_SLURM_VERSION, else 22.05 for install/up/can-run and
the running cluster's version for the other commands.
EOF
}

# wait_for DESC SECONDS CMD... -- poll CMD every 0.1 s; fail with the logs path on
# timeout, or at once if a daemon named in WATCH has exited.
WATCH=()
wait_for() {
    local desc=$1 limit=$2 name pid; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        for name in "${WATCH[@]}"; do
            read -r pid _ <"$ROOT/pids/$name"
            running "$pid" || die "$name exited while waiting for $desc (logs: $ROOT/log/$name*)"
        done
        if ((SECONDS >= deadline)); then
            die "timed out after ${limit}s waiting for $desc (logs: $ROOT/log)"
        fi
        sleep 0.1
    done
}

# render TEMPLATE OUT KEY=VALUE... -- replace every @KEY@; refuse leftovers.
render() {
    local tpl=$1 out=$2 kv text; shift 2
    text=$(<"$tpl")
    for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
    if [[ $text =~ @[A-Z_]+@ ]]; then die "unfilled placeholder ${BASH_REMATCH[0]} in $tpl"; fi
    printf '%s\n' "$text" >"$out"
}

need_root() { [[ $(id -u) == 0 ]] || die "must run as root"; }

node_ns() { echo "${NS_PREFIX}node$1"; }
node_addr() { echo "$NET.$((10 + $1))"; }

# slurm_env [VERSION] -- clients for the cluster at ROOT (24.11: ROOT/bin's chroot wrappers first on PATH).
slurm_env() {
    export SLURM_CONF=$ROOT/etc/slurm.conf
    local v=${1:-$SLURM_VERSION}
    if [[ -n $v && $v != 22.05 && :$PATH: != *":$ROOT/bin:"* ]]; then export PATH=$ROOT/bin:$PATH; fi
}

# state_version -- the Slurm version of the cluster recorded in ROOT/state (22.05 when none is recorded).
state_version() {
    local v=""
    [[ -r $ROOT/state ]] && v=$(sed -n 's/^slurm=//p' "$ROOT/state")
    echo "${v:-22.05}"
}

# IN_FS -- prefix that runs a command from the Slurm version's filesystem (empty for 22.05).
set_in_fs() {
    IN_FS=()
    [[ $SLURM_VERSION == 22.05 ]] || IN_FS=("$ROOT/bin/hsft-chroot")
}

# ---------------------------------------------------------------- process records
# ROOT/pids/NAME holds "PID COMM": we only ever signal a pid whose comm still matches.

record() { echo "$2 $3" >"$ROOT/pids/$1"; }

rec_pid() {   # rec_pid NAME -> prints the pid if that process is still the one we started
    local f=$ROOT/pids/$1 pid comm
    [[ -r $f ]] || return 1
    read -r pid comm <"$f" || return 1
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$comm" ]] && running "$pid" || return 1
    echo "$pid"
}

alive() { rec_pid "$1" >/dev/null; }

# running PID -- exists and is not a zombie (PID 1 here may take ~2 s to reap).
running() {
    local st
    st=$(cat /proc/"$1"/stat 2>/dev/null) || return 1
    st=${st##*) }
    [[ ${st%% *} != Z ]]
}

# spawn NAME COMM LOG CMD... -- start a foreground daemon detached from our session.
spawn() {
    local name=$1 comm=$2 logf=$3; shift 3
    # setsid does not fork here (a background job is no group leader), so $! is the daemon.
    # fd 9 is the up/down lock: a daemon must not inherit it.
    setsid "$@" </dev/null >>"$logf" 2>&1 9>&- &
    record "$name" $! "$comm"
    disown $!    # no "Killed" job notices from this shell when down ends it
    WATCH+=("$name")
}

# take_lock -- one up/down at a time on this machine (bounded wait).
take_lock() {
    exec 9>>"$LOCK_FILE"
    flock -w "$LOCK_WAIT_S" 9 || die "another cluster.sh up/down held $LOCK_FILE for ${LOCK_WAIT_S}s"
}

# orphans -- our daemons whose pid records are gone (ROOT deleted under a running
# cluster): matched by daemon name AND by ROOT in their command line or environment.
orphans() {
    local d comm args envs
    for d in /proc/[0-9]*; do
        comm=$(cat 2>/dev/null "$d/comm") || continue
        [[ " $DAEMONS " == *" $comm "* ]] || continue
        args=$(tr 2>/dev/null '\0' ' ' <"$d/cmdline") || continue
        envs=$(tr 2>/dev/null '\0' '\n' <"$d/environ") || continue
        if [[ $args == *"$ROOT/"* || $'\n'$envs$'\n' == *$'\n'"SLURM_CONF=$ROOT/etc/slurm.conf"$'\n'* ]]; then
            running "${d#/proc/}" && echo "${d#/proc/}"
        fi
    done
    return 0
}

# view_prefix HOSTNAME [NETNS] -- set VIEW to a command prefix that runs a command
# with its own hostname, the private hosts file and ROOT/etc as /etc/slurm, inside
# network namespace NETNS (default: the current one). Mounts stay private to it.
view_prefix() {
    local host=$1 ns=${2:-}
    VIEW=()
    # nsenter, not `ip netns exec`: the latter remounts /sys and slurmd then dies.
    [[ -z $ns ]] || VIEW=(nsenter --net=/run/netns/"$ns")
    if [[ $SLURM_VERSION != 22.05 ]]; then
        # The same view, inside FS_ROOT (hosts and ROOT/etc mounted over its /etc/hosts and /etc/slurm).
        VIEW+=("$ROOT/bin/hsft-chroot" --host "$host" "$ROOT/etc")
        return 0
    fi
    # shellcheck disable=SC2016
    # slave: later mounts of the real system still show up inside; ours never leak out.
    VIEW+=(unshare --uts --mount --propagation slave -- sh -c '
        hostname "$1" && mount --bind "$2" /etc/hosts || exit 1
        if [ -d /etc/slurm ]; then mount --bind "$3" /etc/slurm || exit 1; fi
        shift 3; exec "$@"' sh "$host" "$ROOT/etc/hosts" "$ROOT/etc")
}

# netns_pids -- every process inside our node network namespaces.
netns_pids() {
    local ns
    for ns in $(our_netns); do ip netns pids "$ns" 2>/dev/null || true; done
}

our_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${NS_PREFIX}node[0-9]+$" || true; }

# signal_and_wait SIGNAL SECONDS PID... -- send SIGNAL, wait for exit, bounded;
# leaves the pids still running in LIVE.
signal_and_wait() {
    local sig=$1 limit=$2 p; shift 2
    LIVE=()
    (($#)) || return 0
    kill -"$sig" "$@" 2>/dev/null || true
    local deadline=$((SECONDS + limit))
    while :; do
        LIVE=()
        for p in "$@"; do running "$p" && LIVE+=("$p"); done
        ((${#LIVE[@]})) || return 0
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# stop_pids TERM_SECONDS PID... -- TERM, then KILL whatever is left.
stop_pids() {
    local limit=$1; shift
    (($#)) || return 0
    signal_and_wait TERM "$limit" "$@" && return 0
    log "KILL leftovers: $(ps -o pid=,comm= -p "${LIVE[*]}" 2>/dev/null | tr -s ' \n' ' ')"
    signal_and_wait KILL 5 "${LIVE[@]}" || log "WARNING: still alive after KILL: ${LIVE[*]}"
}

# ---------------------------------------------------------------- install / can-run

packages_installed() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
    done
}

cmd_install() {
    need_root
    if [[ $SLURM_VERSION != 22.05 ]]; then install_fs; return; fi
    if packages_installed; then log "packages already installed"; return 0; fi
    command -v apt-get >/dev/null || die "apt-get not found (Debian 12 expected)"
    local guard=/usr/sbin/policy-rc.d added=0
    # Keep Debian postinst scripts from starting system munge/mariadb (we run our own).
    if [[ ! -e $guard ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$guard" && chmod 755 "$guard" && added=1
    fi
    local rc=0
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${PACKAGES[@]}"
    } || rc=$?
    ((added)) && rm -f "$guard"
    ((rc == 0)) || die "apt-get failed (rc=$rc)"
    log "packages installed"
}

# ---------------------------------------------------------------- the Slurm 24.11 root filesystem
# A Debian trixie root (mmdebstrap, else debootstrap, from Debian's registry) with Slurm 24.11, munge, MariaDB
# and Lua, built once into FS_ROOT and reused. Daemons and clients run chrooted into it (ROOT/bin/hsft-chroot)
# with this machine's /tmp /work /root /home /dev /proc /sys /run/netns mounted at the same paths.

fs_wanted() { printf '%s\n' "suite=$FS_SUITE" "${FS_PACKAGES[@]}"; }

fs_built() { [[ -r $FS_ROOT/$FS_MARK && $(<"$FS_ROOT/$FS_MARK") == "$(fs_wanted)" ]]; }

host_tools_installed() {
    local p
    for p in iproute2 util-linux; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
    done
}

install_fs() {
    if fs_built; then log "Slurm $SLURM_VERSION root filesystem already built: $FS_ROOT"; return 0; fi
    local t0=$SECONDS tool="" tmp b rc=0 includes
    mkdir -p "$(dirname "$FS_ROOT")"
    exec 8>>"$FS_ROOT.lock"
    flock -w "$FS_BUILD_WAIT_S" 8 || die "another build of $FS_ROOT held $FS_ROOT.lock for ${FS_BUILD_WAIT_S}s"
    if fs_built; then exec 8>&-; log "root filesystem built meanwhile: $FS_ROOT"; return 0; fi
    if command -v mmdebstrap >/dev/null; then tool=mmdebstrap
    elif command -v debootstrap >/dev/null; then tool=debootstrap
    else
        command -v apt-get >/dev/null || die "cannot build the Slurm $SLURM_VERSION root: no mmdebstrap, debootstrap or apt-get"
        log "installing mmdebstrap (to build the Debian $FS_SUITE root filesystem)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            mmdebstrap; } >&2 || die "cannot build the Slurm $SLURM_VERSION root: apt-get install mmdebstrap failed"
        tool=mmdebstrap
    fi
    host_tools_installed || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux >&2 ||
        die "apt-get install iproute2 util-linux failed"; }
    tmp=$FS_ROOT.build.$$
    rm -rf "$FS_ROOT".build.*
    log "building the Debian $FS_SUITE root filesystem with Slurm $SLURM_VERSION into $FS_ROOT ($tool, $FS_MIRROR)"
    includes=$(IFS=,; echo "${FS_PACKAGES[*]}")
    if [[ $tool == mmdebstrap ]]; then
        # mmdebstrap keeps maintainer scripts from starting daemons (munge, MariaDB) while it installs.
        timeout "$FS_BUILD_WAIT_S" mmdebstrap --variant=apt --include="$includes" \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' "$FS_SUITE" "$tmp" "$FS_MIRROR" >&2 || rc=$?
    else
        mkdir -p "$tmp/usr/sbin" && printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d" &&
            chmod 755 "$tmp/usr/sbin/policy-rc.d"
        timeout "$FS_BUILD_WAIT_S" debootstrap --variant=minbase --include="$includes" \
            "$FS_SUITE" "$tmp" "$FS_MIRROR" >&2 || rc=$?
        rm -f "$tmp/usr/sbin/policy-rc.d"
    fi
    if ((rc != 0)); then
        rm -rf "$tmp"
        die "cannot build the Slurm $SLURM_VERSION root filesystem: $tool $FS_SUITE from $FS_MIRROR failed (rc=$rc)"
    fi
    for b in usr/sbin/slurmctld usr/sbin/slurmd usr/sbin/slurmdbd usr/sbin/munged usr/sbin/mariadbd usr/bin/sbatch \
        usr/lib/x86_64-linux-gnu/slurm-wlm/job_submit_lua.so; do
        [[ -e $tmp/$b ]] || { rm -rf "$tmp"; die "the built $FS_SUITE root lacks /$b"; }
    done
    for b in $FS_SHARED /etc/slurm; do mkdir -p "$tmp$b"; done
    touch "$tmp/etc/hosts"
    fs_wanted >"$tmp/$FS_MARK"
    if [[ -e $FS_ROOT ]]; then
        [[ -e $FS_ROOT/$FS_MARK ]] || die "$FS_ROOT exists and was not built by cluster.sh; remove it or set HPC_SFT_SLURM_FS_ROOT"
        rm -rf "$FS_ROOT"    # an older build of ours, with another package list
    fi
    mv "$tmp" "$FS_ROOT"
    exec 8>&-
    log "built $FS_ROOT in $((SECONDS - t0))s ($(du -sh "$FS_ROOT" | cut -f1))"
}

# fs_shared -- the folders shared into FS_ROOT, one per line: FS_SHARED, this checkout and HPC_SFT_SLURM_SHARE,
# without one inside another already shared. A folder under the trixie root's own (/usr, /etc, ...) cannot be
# shared: a job there would see trixie's files, so `up` stops and says so.
fs_shared() {
    local repo d o s ok wanted=() kept=() own=()
    repo=$(cd "$HERE/.." && pwd -P)
    read -ra wanted <<<"$FS_SHARED"
    read -ra own <<<"$FS_OWN"
    wanted+=("$repo" "$ROOT")
    IFS=: read -ra s <<<"${HPC_SFT_SLURM_SHARE:-}"
    wanted+=("${s[@]}")
    for d in "${wanted[@]}"; do
        [[ -n $d ]] || continue
        [[ $d == /* && $d != *[[:space:]]* ]] || die "HPC_SFT_SLURM_SHARE: '$d' must be an absolute path without spaces"
        d=${d%/}
        for o in "${own[@]}"; do
            [[ $d == "$o" || $d == "$o"/* ]] && die "cannot share $d into the Slurm $SLURM_VERSION root: $o is its own" \
                "(Debian $FS_SUITE's); keep the checkout, the venv and its Python outside $FS_OWN"
        done
        ok=1
        for s in "${kept[@]}"; do [[ $d == "$s" || $d == "$s"/* ]] && ok=0; done
        ((ok)) && kept+=("$d")
    done
    printf '%s\n' "${kept[@]}"
}

# write_fs_bin -- ROOT/bin: hsft-chroot (run a command inside FS_ROOT, same paths, cwd and environment) and one
# wrapper per Slurm client. Inside FS_ROOT already (a job calling scontrol), they run /usr/bin/CMD directly.
write_fs_bin() {
    local b=$ROOT/bin c shared
    shared=$(fs_shared | tr '\n' ' ')
    mkdir -p "$b"
    cat >"$b/hsft-chroot" <<EOF
#!/bin/sh
# hsft-chroot [--host NAME ETC] CMD... -- written by slurm/cluster.sh up --slurm $SLURM_VERSION.
# Runs CMD inside the Slurm $SLURM_VERSION root filesystem $FS_ROOT, with this machine's
# $shared at the same paths, the same cwd (/ if it is not there) and environment.
# --host NAME ETC: own UTS namespace with hostname NAME, ETC/hosts over /etc/hosts, ETC over /etc/slurm;
# without it, this machine's /etc/hosts over /etc/hosts.
if [ -e /$FS_MARK ]; then
    [ "\${1:-}" = --host ] && shift 3
    exec "\$@"
fi
uts=""
[ "\${1:-}" = --host ] && uts=--uts
exec unshare \$uts --mount --propagation slave -- /bin/sh -c '
    T=\$1; shift
    if [ "\$1" = --host ]; then
        hostname "\$2" && mount --bind "\$3/hosts" "\$T/etc/hosts" && mount --bind "\$3" "\$T/etc/slurm" || exit 1
        shift 3
    else
        mount --bind /etc/hosts "\$T/etc/hosts" || exit 1
    fi
    for d in $shared; do
        [ -d "\$d" ] || continue
        [ -d "\$T\$d" ] || mkdir -p "\$T\$d" || exit 1
        mount --rbind "\$d" "\$T\$d" || exit 1
    done
    dir=\$PWD
    [ -d "\$T\$dir" ] || dir=/
    exec chroot "\$T" /usr/bin/env --chdir="\$dir" "\$@"' sh "$FS_ROOT" "\$@"
EOF
    for c in $CLIENTS; do
        [[ -e $FS_ROOT/usr/bin/$c ]] || continue
        printf '#!/bin/sh\n# Slurm %s %s (from %s), written by slurm/cluster.sh up.\nexec "%s" /usr/bin/%s "$@"\n' \
            "$SLURM_VERSION" "$c" "$FS_ROOT" "$b/hsft-chroot" "$c" >"$b/$c"
    done
    chmod 755 "$b"/*
}

cmd_can_run() {
    local tmpns=${NS_PREFIX}canrun$$
    [[ $(id -u) == 0 ]] || { echo "cannot run: not root"; return 1; }
    local c
    for c in ip unshare nsenter setsid; do
        command -v "$c" >/dev/null || { echo "cannot run: '$c' not found"; return 1; }
    done
    ip netns add "$tmpns" 2>/dev/null || { echo "cannot run: 'ip netns add' failed"; return 1; }
    if ! nsenter --net=/run/netns/"$tmpns" unshare --uts --mount --propagation private -- \
        sh -c 'hostname canrun && ip link set lo up' 2>/dev/null; then
        ip netns del "$tmpns" 2>/dev/null || true
        echo "cannot run: nsenter/unshare into a network namespace failed"
        return 1
    fi
    ip netns del "$tmpns"
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "${BRIDGE}t" type bridge 2>/dev/null || { echo "cannot run: cannot create a bridge"; return 1; }
        ip link del "${BRIDGE}t"
    fi
    if [[ $SLURM_VERSION != 22.05 ]]; then
        fs_built && { echo "ok"; return 0; }
        if ! command -v mmdebstrap >/dev/null && ! command -v debootstrap >/dev/null && ! command -v apt-get >/dev/null; then
            echo "cannot run: Slurm $SLURM_VERSION root filesystem not built at $FS_ROOT, and no mmdebstrap, debootstrap or apt-get to build it"
            return 1
        fi
        echo "ok (Slurm $SLURM_VERSION root filesystem not built yet; 'cluster.sh install --slurm $SLURM_VERSION' or 'up' builds $FS_ROOT, ~1 min)"
        return 0
    fi
    if ! packages_installed; then
        command -v apt-get >/dev/null || { echo "cannot run: packages missing and no apt-get"; return 1; }
        echo "ok (packages not installed yet; 'cluster.sh install' or 'up' installs them)"
        return 0
    fi
    echo "ok"
}

# ---------------------------------------------------------------- health

# healthy [N] -- all recorded daemons alive, controller answers, N nodes responding.
healthy() {
    local want=${1:-} n name state i
    [[ -r $ROOT/state ]] || return 1
    n=$(sed -n 's/^nodes=//p' "$ROOT/state")
    [[ -n $n ]] || return 1
    [[ -z $want || $want == "$n" ]] || return 1
    [[ $(state_version) == "$SLURM_VERSION" ]] || return 1
    for name in munged mariadbd slurmdbd slurmctld; do alive "$name" || return 1; done
    for ((i = 1; i <= n; i++)); do alive "slurmd-node$i" || return 1; done
    slurm_env
    timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
    local ok=0
    while read -r name state; do
        case $state in idle | mixed | allocated | completing | planned | reserved) ok=$((ok + 1)) ;; esac
    done < <(timeout 5 sinfo -h -N -p main -o '%N %T' 2>/dev/null)
    ((ok == n))
}

all_idle() {   # all_idle N
    local c
    c=$(timeout 5 sinfo -h -N -p main -t idle -o '%N' 2>/dev/null | sort -u | wc -l)
    ((c == $1))
}

# any trace of a cluster (ours at ROOT, or the global network objects)?
has_traces() {
    [[ -e $ROOT/state || -d $ROOT/pids ]] && return 0
    ip link show "$BRIDGE" >/dev/null 2>&1 && return 0
    [[ -n $(our_netns) ]]
}

bridge_owner() { { ip -o link show "$BRIDGE" 2>/dev/null || true; } | sed -n "s/.*alias ${OWNER_TAG}:\(.*\)$/\1/p"; }

# ---------------------------------------------------------------- up: pieces

make_layout() {
    remove_root
    [[ ! -e $ROOT ]] || [[ -d $ROOT && -z $(ls -A "$ROOT") ]] ||
        die "$ROOT exists and was not made by cluster.sh; choose another --root"
    mkdir -p "$ROOT"
    : >"$ROOT/$MARKER"
    mkdir -p "$ROOT"/{etc,pids,run,log,ctld/state,munge,db}
    chmod 755 "$ROOT" "$ROOT/munge"    # munged wants its socket folder 755, not 700
    for ((i = 1; i <= NODES; i++)); do mkdir -p "$ROOT/nodes/node$i/spool"; done
}

write_configs() {
    local node_lines="" node_hosts="" host_name addr
    for ((i = 1; i <= NODES; i++)); do
        addr=$(node_addr "$i")
        node_lines+="NodeName=node$i NodeAddr=$addr NodeHostname=node$i CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=4000 State=UNKNOWN"$'\n'
        node_hosts+="$addr node$i"$'\n'
    done
    # Let the machine's own hostname (SLURM_SUBMIT_HOST) resolve to the controller too.
    host_name=$(hostname -s 2>/dev/null || true)
    [[ $host_name =~ ^(localhost|node[0-9]+|$CTL_NAME)?$ ]] && host_name=""
    # Job ids differ between fresh clusters (submitit folders keyed by job id stay unique).
    local first_job_id=$((($(date +%s) % 60000) * 1000 + 1))
    local common=(ROOT="$ROOT" CTL_NAME="$CTL_NAME" CTL_ADDR="$CTL_ADDR" MUNGE_SOCKET="$ROOT/munge/munge.socket.2"
        DBD_PORT="$DBD_PORT")
    render "$CONF_DIR/slurm.conf.in" "$ROOT/etc/slurm.conf" "${common[@]}" CLUSTER="$CLUSTER" \
        CTLD_PORT="$CTLD_PORT" SLURMD_PORT="$SLURMD_PORT" FIRST_JOB_ID="$first_job_id" GRACE_TIME="$GRACE_TIME" \
        NODE_LINES="${node_lines%$'\n'}"
    render "$CONF_DIR/slurmdbd.conf.in" "$ROOT/etc/slurmdbd.conf" "${common[@]}" DB_PORT="$DB_PORT" \
        DB_USER="$DB_USER" DB_PASS="$DB_PASS"
    chmod 600 "$ROOT/etc/slurmdbd.conf"
    render "$CONF_DIR/hosts.in" "$ROOT/etc/hosts" CTL_ADDR="$CTL_ADDR" CTL_NAME="$CTL_NAME" \
        HOST_NAME="$host_name" NODE_HOSTS="${node_hosts%$'\n'}"
    : >"$ROOT/etc/plugstack.conf"
    cp "$CONF_DIR/job_submit.lua" "$ROOT/etc/job_submit.lua"   # read from SLURM_CONF's folder
    cat >"$ROOT/env.sh" <<EOF
# Source this to use the hpc-sft test cluster (written by slurm/cluster.sh up).
export SLURM_CONF=$ROOT/etc/slurm.conf
export HPC_SFT_SLURM_ROOT=$ROOT
export HPC_SFT_SLURM_NODES=$NODES
EOF
    # kill-node/start-node find a second cluster's namespaces by its prefix.
    [[ $PREFIX == hsft ]] || echo "export HPC_SFT_SLURM_PREFIX=$PREFIX" >>"$ROOT/env.sh"
    [[ $SLURM_VERSION == 22.05 ]] && return 0
    write_fs_bin
    # The version's clients (chroot wrappers) first on PATH; PATH is expanded where env.sh is read.
    cat >>"$ROOT/env.sh" <<EOF
export HPC_SFT_SLURM_VERSION=$SLURM_VERSION
export PATH="$ROOT/bin:\$PATH"
EOF
}

start_munge() {
    local m=$ROOT/munge
    set_in_fs
    "${IN_FS[@]}" mungekey -c -k "$m/munge.key" >>"$ROOT/log/munged.log" 2>&1 || die "mungekey failed (logs: $ROOT/log)"
    chmod 600 "$m/munge.key"
    spawn munged munged "$ROOT/log/munged.out" "${IN_FS[@]}" munged -F --force --socket="$m/munge.socket.2" \
        --key-file="$m/munge.key" --log-file="$ROOT/log/munged.log" --pid-file="$ROOT/run/munged.pid" \
        --seed-file="$m/munged.seed"
    wait_for "munged socket" "$WAIT_S" test -S "$m/munge.socket.2"
}

db_sql() { "${IN_FS[@]}" mariadb --no-defaults "${DB_EXTRA[@]}" --socket="$ROOT/db/mysqld.sock" -uroot -e "$1"; }

start_mariadb() {
    set_in_fs
    DB_EXTRA=()
    [[ $SLURM_VERSION == 22.05 ]] || DB_EXTRA=(--skip-ssl)
    "${IN_FS[@]}" mariadb-install-db --no-defaults --user=root --datadir="$ROOT/db/data" --skip-test-db \
        --auth-root-authentication-method=socket >>"$ROOT/log/mariadb-install.log" 2>&1 ||
        die "mariadb-install-db failed (log: $ROOT/log/mariadb-install.log)"
    # Throwaway database: no binlog, no fsync; TCP only on 127.0.0.1 (pool 128M: slurmdbd warns if less).
    spawn mariadbd mariadbd "$ROOT/log/mariadbd.out" "${IN_FS[@]}" mariadbd --no-defaults --user=root \
        --datadir="$ROOT/db/data" --socket="$ROOT/db/mysqld.sock" --pid-file="$ROOT/run/mariadbd.pid" \
        --log-error="$ROOT/log/mariadbd.log" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --skip-name-resolve --skip-log-bin --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=0 \
        --innodb-doublewrite=0 --innodb-lock-wait-timeout=900 "${DB_EXTRA[@]}"
    wait_for "MariaDB" "$WAIT_S" db_sql 'SELECT 1'
    db_sql "CREATE USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
            GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'127.0.0.1';" || die "MariaDB user setup failed"
}

start_slurmdbd() {
    # slurmdbd has no -f: it reads slurmdbd.conf next to SLURM_CONF.
    view_prefix "$CTL_NAME"
    spawn slurmdbd slurmdbd "$ROOT/log/slurmdbd.out" "${VIEW[@]}" env SLURM_CONF="$ROOT/etc/slurm.conf" slurmdbd -D
    wait_for "slurmdbd (adding cluster $CLUSTER)" "$WAIT_S" add_cluster
}

add_cluster() {
    local out
    out=$(timeout 5 sacctmgr -i add cluster "$CLUSTER" 2>&1) && return 0
    [[ $out == *"already exists"* ]]
}

start_slurmctld() {
    view_prefix "$CTL_NAME"
    spawn slurmctld slurmctld "$ROOT/log/slurmctld.out" "${VIEW[@]}" slurmctld -D -f "$ROOT/etc/slurm.conf"
    wait_for "slurmctld" "$WAIT_S" sh -c 'timeout 3 scontrol ping | grep -q "is UP"'
}

make_network() {
    ip link add "$BRIDGE" type bridge
    ip link set "$BRIDGE" alias "$OWNER_TAG:$ROOT"
    ip addr add "$CTL_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    local ns veth
    for ((i = 1; i <= NODES; i++)); do
        ns=$(node_ns "$i") veth=$VETH_PREFIX$i
        ip netns add "$ns"
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
}

start_slurmds() {
    local conf=$ROOT/etc/slurm.conf
    for ((i = 1; i <= NODES; i++)); do
        view_prefix "node$i" "$(node_ns "$i")"
        spawn "slurmd-node$i" slurmd "$ROOT/log/slurmd-node$i.out" "${VIEW[@]}" \
            env SLURM_CONF="$conf" slurmd -D -f "$conf" -N "node$i"
    done
    wait_for "$NODES nodes idle in sinfo" "$WAIT_S" all_idle "$NODES"
}

check_subnet_free() {
    local used
    [[ $NET =~ ^10\.[0-9]{1,3}\.[0-9]{1,3}$ || $NET =~ ^192\.168\.[0-9]{1,3}$ ]] ||
        die "HPC_SFT_SLURM_NET must be the first three octets of a private /24 (e.g. 10.200.0)"
    used=$(ip -o -4 addr show | awk -v net="$NET." -v br="$BRIDGE" '$2 != br && index($4, net) == 1 {print $2}')
    [[ -z $used ]] || die "subnet $NET.0/24 already used by interface(s): $used (set HPC_SFT_SLURM_NET)"
    ((${#ROOT} <= 80)) || die "ROOT path too long for unix sockets: $ROOT"
}

# ---------------------------------------------------------------- commands

parse_common() {   # sets NODES / ROOT / KEEP_LOGS / REST from "$@"
    KEEP_LOGS=0 REST=()
    while (($#)); do
        case $1 in
        --nodes) NODES=${2:?--nodes needs a value}; shift 2 ;;
        --nodes=*) NODES=${1#*=}; shift ;;
        --root) ROOT=${2:?--root needs a value}; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --keep-logs) KEEP_LOGS=1; shift ;;
        --slurm) SLURM_VERSION=${2:?--slurm needs a value}; shift 2 ;;
        --slurm=*) SLURM_VERSION=${1#*=}; shift ;;
        --) shift; REST=("$@"); break ;;
        -*) die "unknown option: $1" ;;
        *) REST=("$@"); break ;;
        esac
    done
    [[ $ROOT == /* ]] || ROOT=$PWD/$ROOT
    ROOT=${ROOT%/}
    [[ -n $ROOT && $ROOT != / ]] || die "refusing ROOT=/"
}

cmd_up() {
    need_root
    [[ $NODES =~ ^[0-9]+$ ]] && ((NODES >= 1 && NODES <= MAX_NODES)) || die "--nodes must be 1..$MAX_NODES"
    local t0=$SECONDS
    take_lock
    if healthy "$NODES"; then
        log "already up and healthy at $ROOT"
        sinfo
        echo "$ROOT/env.sh"
        return 0
    fi
    local owner
    owner=$(bridge_owner)
    if [[ -n $owner && $owner != "$ROOT" && -e $owner/state ]]; then
        die "another cluster is up at $owner; run: $0 down --root $owner"
    fi
    if has_traces; then
        log "found a partial or different cluster; tearing it down first"
        do_down 0
    fi
    if [[ $SLURM_VERSION == 22.05 ]]; then packages_installed || cmd_install
    else fs_built && host_tools_installed || cmd_install
    fi
    check_subnet_free
    log "starting $NODES nodes under $ROOT"
    make_layout
    trap up_failed EXIT
    write_configs
    slurm_env
    make_network
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmds
    echo "nodes=$NODES" >"$ROOT/state"
    [[ $SLURM_VERSION == 22.05 ]] || echo "slurm=$SLURM_VERSION" >>"$ROOT/state"
    trap - EXIT
    sinfo
    log "up in $((SECONDS - t0))s; source the env file below"
    echo "$ROOT/env.sh"
}

up_failed() {
    local rc=$?
    trap - EXIT
    ((rc == 0)) && return 0
    log "up failed; last log lines:"
    local f
    for f in "$ROOT"/log/*; do
        [[ -s $f ]] || continue
        echo "==> $f <==" >&2
        tail -n 5 "$f" >&2
    done
    log "tearing down; logs kept in $ROOT/log"
    do_down 1 || true
    exit "$rc"
}

# network_is_ours -- false while the bridge belongs to another ROOT that is still up.
network_is_ours() {
    local owner
    owner=$(bridge_owner)
    [[ -z $owner || $owner == "$ROOT" || ! -e $owner/state ]]
}

# do_down KEEP_LOGS -- stop only what we recorded + what lives in our namespaces.
do_down() {
    local keep=$1 pids=() p name ns f mine=1 v=$SLURM_VERSION
    network_is_ours || { mine=0; log "network belongs to the cluster at $(bridge_owner); leaving it alone"; }
    [[ -r $ROOT/state ]] && v=$(state_version)
    if [[ -r $ROOT/etc/slurm.conf ]] && alive slurmctld; then
        slurm_env "$v"
        # Cancel everything so slurmctld does not keep requeueing while we stop it.
        timeout 5 scancel --quiet --user=root 2>/dev/null || true
    fi
    # 1) nodes: slurmd, slurmstepd and every job process live in the node netns.
    for f in "$ROOT"/pids/slurmd-node*; do
        [[ -e $f ]] || continue
        p=$(rec_pid "$(basename "$f")") && pids+=("$p")
    done
    p=$(rec_pid slurmctld) && pids+=("$p")
    ((mine)) && mapfile -t -O "${#pids[@]}" pids < <(netns_pids)
    stop_pids 2 "${pids[@]}"    # slurmstepd ignores TERM while its job runs: KILL soon
    # 2) slurmdbd before MariaDB (slurmdbd hangs if the database goes first).
    p=$(rec_pid slurmdbd) && stop_pids 3 "$p"
    # 3) MariaDB's clean shutdown takes ~10 s; its data is thrown away, so KILL.
    p=$(rec_pid mariadbd) && { signal_and_wait KILL 5 "$p" || log "WARNING: mariadbd $p survived KILL"; }
    p=$(rec_pid munged) && stop_pids 3 "$p"
    mapfile -t pids < <(orphans)
    if ((${#pids[@]})); then log "stopping unrecorded daemons of $ROOT: ${pids[*]}"; stop_pids 3 "${pids[@]}"; fi
    # 4) network objects: only ours (bridge alias names the ROOT that created it).
    ((mine)) && remove_network
    # 5) files.
    if ((keep)) && [[ -d $ROOT/log && -e $ROOT/$MARKER ]]; then
        find "$ROOT" -mindepth 1 -maxdepth 1 ! -name log ! -name "$MARKER" -exec rm -rf {} +
    else
        remove_root
    fi
}

remove_network() {
    local ns name pids
    for ns in $(our_netns); do
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        ((${#pids[@]})) && stop_pids 2 "${pids[@]}"
        ip netns del "$ns" 2>/dev/null || log "WARNING: could not delete netns $ns"
    done
    for name in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^${VETH_PREFIX}[0-9]+$" || true); do
        ip link del "$name" 2>/dev/null || true
    done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link del "$BRIDGE" 2>/dev/null || log "WARNING: could not delete bridge $BRIDGE"
    fi
    return 0
}

# remove_root -- delete ROOT, but only if cluster.sh created it (marker file).
remove_root() {
    if [[ -e $ROOT/$MARKER ]]; then
        rm -rf "$ROOT"
    elif [[ -e $ROOT ]]; then
        log "not deleting $ROOT: no $MARKER in it"
    fi
}

cmd_down() {
    need_root
    local t0=$SECONDS
    take_lock
    do_down "$KEEP_LOGS"
    log "down in $((SECONDS - t0))s"
}

cmd_status() {
    if healthy; then
        slurm_env
        sinfo
        return 0
    fi
    echo "cluster at $ROOT is not up (or not healthy)"
    return 1
}

# kill-node N: node N dies: SIGKILL to everything in its network namespace (its slurmd, slurmstepd and
# every job process), as a host that loses power. slurmctld notices after SlurmdTimeout.
cmd_kill_node() {
    need_root
    local i=${REST[0]:-} pids
    [[ $i =~ ^[0-9]+$ ]] || die "usage: $0 kill-node N"
    pids=$(ip netns pids "$(node_ns "$i")" 2>/dev/null) || die "node$i has no network namespace: is it up?"
    [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
    log "killed node$i ($(echo $pids | wc -w) processes)"
}

# start-node N: start node N's slurmd again (after kill-node) and wait until the node is idle.
cmd_start_node() {
    need_root
    local i=${REST[0]:-}
    [[ $i =~ ^[0-9]+$ ]] || die "usage: $0 start-node N"
    slurm_env
    alive "slurmd-node$i" && { log "node$i is running"; return 0; }
    view_prefix "node$i" "$(node_ns "$i")"
    spawn "slurmd-node$i" slurmd "$ROOT/log/slurmd-node$i.out" "${VIEW[@]}" \
        env SLURM_CONF="$ROOT/etc/slurm.conf" slurmd -D -f "$ROOT/etc/slurm.conf" -N "node$i"
    scontrol update NodeName="node$i" State=RESUME >/dev/null 2>&1 || true
    wait_for "node$i idle" "$WAIT_S" sh -c "sinfo -h -n node$i -t idle -o %N | grep -q node$i"
    log "node$i is back"
}

cmd_exec() {
    [[ -r $ROOT/env.sh ]] || die "no $ROOT/env.sh: is the cluster up?"
    ((${#REST[@]})) || die "usage: $0 exec [--root DIR] -- CMD..."
    # shellcheck disable=SC1091
    source "$ROOT/env.sh"
    exec "${REST[@]}"
}

main() {
    local cmd=${1:-help}
    (($#)) && shift
    case $cmd in
    install | can-run | up) parse_common "$@"; SLURM_VERSION=${SLURM_VERSION:-22.05} ;;
    down | status | exec | kill-node | start-node) parse_common "$@"; SLURM_VERSION=${SLURM_VERSION:-$(state_version)} ;;
    esac
    [[ -z $SLURM_VERSION || " $VERSIONS " == *" $SLURM_VERSION "* ]] || die "--slurm must be one of: $VERSIONS"
    case $cmd in
    install) [[ ${#REST[@]} == 0 ]] || die "unexpected argument: ${REST[0]}"; cmd_install ;;
    can-run) [[ ${#REST[@]} == 0 ]] || die "unexpected argument: ${REST[0]}"; cmd_can_run ;;
    up) [[ ${#REST[@]} == 0 ]] || die "unexpected argument: ${REST[0]}"; cmd_up ;;
    down) [[ ${#REST[@]} == 0 ]] || die "unexpected argument: ${REST[0]}"; cmd_down ;;
    status) cmd_status ;;
    exec) cmd_exec ;;
    kill-node) cmd_kill_node ;;
    start-node) cmd_start_node ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 2 ;;
    esac
}

main "$@"
