#!/usr/bin/env bash
# The whole test suite, as CI runs it: two pytest processes at once, each with its own real Slurm cluster
# (tests/shards.py says which tests go where):
#   a: every test that needs a cluster, on Slurm 22.05 (Debian 12's packages; the default cluster names)
#   b: every other test, and the core Slurm tests again on Slurm 24.11 (Debian trixie's; a second cluster
#      with its own names, network and ports)
# Most cluster tests wait on Slurm (time limits, grace times, preemption), so the two overlap well on 2 cores.
# Extra arguments go to both pytest processes. Plain `.venv/bin/python -m pytest` still runs everything in one.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOGS=${HPC_SFT_TEST_LOGS:-/tmp/hpc-sft-test-logs}
rm -rf "$LOGS" && mkdir -p "$LOGS"

shard() {  # shard NAME ENV... -- one pytest process; its output prefixed with [NAME], also kept in LOGS
    local name=$1; shift
    env HPC_SFT_TEST_SHARD="$name" "$@" "$PY" -m pytest -ra -p no:cacheprovider --basetemp="$LOGS/tmp-$name" \
        "${ARGS[@]}" >"$LOGS/$name.log" 2>&1
}

ARGS=("$@")
start=$SECONDS
shard a &
pid_a=$!
shard b HPC_SFT_SLURM_VERSION=24.11 HPC_SFT_SLURM_PREFIX=hs24 HPC_SFT_SLURM_ROOT=/tmp/hpc-sft-slurm24 \
    HPC_SFT_SLURM_NET=10.201.0 HPC_SFT_SLURM_CTLD_PORT=6917 HPC_SFT_SLURM_SLURMD_PORT=6918 \
    HPC_SFT_SLURM_DBD_PORT=6919 HPC_SFT_SLURM_DB_PORT=6920 &
pid_b=$!
tail -n +1 -F "$LOGS/a.log" 2>/dev/null | sed -u 's/^/[a] /' &
tail_a=$!
tail -n +1 -F "$LOGS/b.log" 2>/dev/null | sed -u 's/^/[b] /' &
tail_b=$!
wait "$pid_a"; rc_a=$?
wait "$pid_b"; rc_b=$?
sleep 1
kill "$tail_a" "$tail_b" 2>/dev/null
wait 2>/dev/null
echo "=== shard a (Slurm 22.05 cluster tests): exit $rc_a | shard b (other tests + core on Slurm 24.11): exit $rc_b"
echo "=== both shards: $((SECONDS - start)) s; full logs in $LOGS"
for name in a b; do grep -E '^(FAILED|ERROR|SKIPPED)|passed|failed' "$LOGS/$name.log" | tail -n 30 | sed "s/^/[$name] /"; done
# pytest exit 5 = nothing collected in a shard (e.g. a -k filter): not a failure of the other
for rc in $rc_a $rc_b; do if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then exit "$rc"; fi; done
[ "$rc_a" = 5 ] && [ "$rc_b" = 5 ] && exit 5
exit 0
