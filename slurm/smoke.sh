#!/usr/bin/env bash
# smoke.sh -- check a running test cluster end to end from the ordinary root shell.
#
# usage: slurm/smoke.sh [--root DIR] [--skip-preempt]
# Needs `slurm/cluster.sh up` first (4 nodes). Uses only ROOT/env.sh (SLURM_CONF; PATH for 24.11).
# Checks: 2-node job (hostnames, SLURM_NODEID, node name resolution), sacct,
# TCP from node2 to node1, requeue from inside a job, preemption of a `main` job
# by a `high` job with the job's --signal delivered (Restarts=1), a `noreq` job whose requeue is refused
# (job_submit.lua), shared filesystem, the venv. Works on both Slurm versions (22.05, 24.11: env.sh says which).
set -euo pipefail

ROOT=${HPC_SFT_SLURM_ROOT:-/tmp/hpc-sft-slurm}
PREEMPT=1
while (($#)); do
    case $1 in
    --root) ROOT=$2; shift 2 ;;
    --skip-preempt) PREEMPT=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
# shellcheck disable=SC1091
source "$ROOT/env.sh"
VENV_PY=${HPC_SFT_VENV_PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
WORK=$(mktemp -d /tmp/hpc-sft-smoke.XXXXXX)
cd "$WORK"
FAILED=0

ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; FAILED=1; }
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

# wait_gone JOBID SECONDS -- until the job has left squeue.
wait_gone() {
    local end=$((SECONDS + $2))
    while [[ -n $(squeue -h -j "$1" -o %T 2>/dev/null) ]]; do
        ((SECONDS < end)) || return 1
        sleep 0.2
    done
}

# wait_for_text FILE TEXT SECONDS
wait_for_text() {
    local end=$((SECONDS + $3))
    until grep -q -- "$2" "$1" 2>/dev/null; do
        ((SECONDS < end)) || return 1
        sleep 0.2
    done
}

check_two_node_job() {
    local t0 jid out
    t0=$(now)
    jid=$(sbatch --parsable -N2 --ntasks-per-node=1 -o two-%j.out --wrap \
        'srun hostname; srun bash -c "echo id \$SLURM_NODEID \$(hostname); getent hosts node1"')
    wait_gone "$jid" 60 || { bad "2-node job $jid did not finish"; return; }
    out=$(cat "two-$jid.out")
    if grep -qx 'id 0 node1' <<<"$out" && grep -qx 'id 1 node2' <<<"$out" &&
        [[ $(grep -c '^10\..* node1$' <<<"$out") == 2 ]]; then
        ok "2-node job $jid: node1/node2, node1 resolves on both ($(since "$t0")s submit->done)"
    else
        bad "2-node job output: $out"
    fi
    # slurmdbd gets the record asynchronously: sacct lags squeue by ~0.1-0.3 s.
    local end=$((SECONDS + 10))
    until sacct -n -X -j "$jid" -o State | grep -q COMPLETED; do
        ((SECONDS < end)) || { bad "sacct -j $jid: $(sacct -j "$jid" 2>&1)"; return; }
        sleep 0.1
    done
    ok "sacct -j $jid: COMPLETED"
}

check_tcp() {
    local jid
    # shellcheck disable=SC2016
    jid=$(sbatch --parsable -N2 --ntasks-per-node=1 -o tcp-%j.out --wrap 'srun bash -c "
first=\$(scontrol show hostnames \$SLURM_JOB_NODELIST | head -n1)
if [ \$SLURM_PROCID = 0 ]; then
  python3 -c \"import socket; s=socket.create_server((\\\"0.0.0.0\\\", 29511)); c, a = s.accept(); print(\\\"server\\\", socket.gethostname(), c.recv(64).decode())\"
else
  python3 -c \"
import socket, time
for _ in range(100):
    try: c = socket.create_connection((\\\"\$first\\\", 29511)); break
    except OSError: time.sleep(0.1)
c.sendall(b\\\"hello-from-\\\" + socket.gethostname().encode())\"
fi"')
    wait_gone "$jid" 60 || { bad "tcp job $jid did not finish"; return; }
    if grep -q 'server node1 hello-from-node2' "tcp-$jid.out"; then ok "TCP node2 -> node1:29511"; else bad "TCP: $(cat "tcp-$jid.out")"; fi
}

check_requeue() {
    local t0 jid
    cat >rq.sh <<'EOF'
#!/bin/bash
echo "run restart=${SLURM_RESTART_COUNT:-unset} at $(date +%s.%N)"
if [ -z "${SLURM_RESTART_COUNT:-}" ]; then
    scontrol requeue "$SLURM_JOB_ID"
    sleep 60
fi
EOF
    t0=$(now)
    jid=$(sbatch --parsable --open-mode=append -o rq-%j.out rq.sh)
    wait_gone "$jid" 90 || { bad "requeue job $jid did not finish"; return; }
    if grep -q 'run restart=1' "rq-$jid.out"; then
        ok "requeue from inside job $jid: reran with SLURM_RESTART_COUNT=1 ($(since "$t0")s submit->done)"
    else
        bad "requeue: $(cat "rq-$jid.out")"
    fi
}

check_preempt() {
    local t0 jid hj nodes
    nodes=$(sinfo -h -p main -o %D)
    cat >pre.sh <<'EOF'
#!/bin/bash
echo "run restart=${SLURM_RESTART_COUNT:-unset}"
srun bash -c 'trap "echo task got USR2 at \$(date +%s.%N)" USR2; for i in $(seq 1200); do sleep 0.1; done'
EOF
    jid=$(sbatch --parsable --open-mode=append -p main -N1 --exclusive --signal=USR2@60 -t 20:00 -o pre-%j.out pre.sh)
    wait_for_text "pre-$jid.out" 'restart=unset' 30 || { bad "preempt: main job $jid did not start"; return; }
    sleep 1
    t0=$(now)
    hj=$(sbatch --parsable -p high -N"$nodes" --exclusive -o high-%j.out --wrap 'echo high ran on $(hostname)')
    if wait_for_text "pre-$jid.out" 'got USR2' 20; then ok "preempted job $jid got USR2 after $(since "$t0")s"; else bad "no USR2"; fi
    if wait_for_text "pre-$jid.out" 'restart=1' 120; then
        ok "preempted job $jid requeued and running again after $(since "$t0")s"
        local restarts
        restarts=$(scontrol show job -o "$jid" | grep -o 'Restarts=[0-9]*')
        [[ $restarts == Restarts=1 ]] && ok "preempted job $jid: $restarts" || bad "preempted job $jid: $restarts"
    else
        bad "preempted job not rerun: $(cat "pre-$jid.out")"
    fi
    wait_gone "$hj" 30 && grep -q 'high ran' "high-$hj.out" && ok "high job $hj ran" || bad "high job $hj"
    scancel "$jid"
}

check_noreq() {
    local jid out end=$((SECONDS + 30))
    jid=$(sbatch --parsable -p noreq -o /dev/null --wrap 'sleep 60')
    until [[ $(squeue -h -j "$jid" -o %T 2>/dev/null) == RUNNING ]]; do
        ((SECONDS < end)) || { bad "noreq job $jid did not start"; scancel "$jid"; return; }
        sleep 0.2
    done
    if out=$(scontrol requeue "$jid" 2>&1); then
        bad "noreq job $jid: scontrol requeue was accepted"
    else
        ok "noreq job $jid: scontrol requeue refused ($(tr '\n' ' ' <<<"$out" | sed 's/ *$//'); $(scontrol show job -o "$jid" | grep -o 'Requeue=[0-9]'))"
    fi
    scancel "$jid"
}

check_fs_and_venv() {
    echo "from-root-shell" >shared.txt
    local out
    out=$(srun -w node3 -D "$WORK" bash -c 'cat shared.txt; echo from-job >written.txt; pwd')
    if [[ $out == *from-root-shell* && $(cat written.txt) == from-job ]]; then ok "shared filesystem ($WORK)"; else bad "fs: $out"; fi
    if [[ -x $VENV_PY ]]; then
        out=$(srun -w node2 "$VENV_PY" -c 'import sys; print(sys.prefix)')
        if [[ $out == "$(dirname "$(dirname "$VENV_PY")")" ]]; then ok "venv in job: $out"; else bad "venv: $out"; fi
    fi
}

check_two_node_job
check_tcp
check_fs_and_venv
check_requeue
check_noreq
((PREEMPT)) && check_preempt
rm -rf "$WORK"
((FAILED == 0)) && echo "smoke: all ok" || { echo "smoke: FAILED"; exit 1; }
