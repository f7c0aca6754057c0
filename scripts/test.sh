#!/usr/bin/env bash
# The whole test suite, as CI runs it: three pytest processes at once, each with its own real Slurm cluster
# (tests/shards.py says which tests go where):
#   a, c: the cluster tests, split over two Slurm 22.05 clusters (Debian 12's packages; a uses the default names)
#   b:    every other test, and the core cluster tests again on Slurm 24.11 (Debian trixie's, in a root
#         filesystem cluster.sh builds once)
# Each cluster has its own names, network and ports. Most cluster tests wait on Slurm (time limits, grace times,
# preemption), so the three overlap well on 2 cores. Extra arguments go to every pytest process. Plain
# `.venv/bin/python -m pytest` still runs everything in one process against one 22.05 cluster.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOGS=${HPC_SFT_TEST_LOGS:-/tmp/hpc-sft-test-logs}
rm -rf "$LOGS" && mkdir -p "$LOGS"

# A shard still running after this many seconds is hung: SIGINT makes pytest print where, and its summary.
SHARD_LIMIT_S=${HPC_SFT_TEST_SHARD_LIMIT_S:-2700}

shard() {  # shard NAME ENV... -- one pytest process; its output prefixed with [NAME], also kept in LOGS
    local name=$1; shift
    env HPC_SFT_TEST_SHARD="$name" HPC_SFT_TEST_SHARED_DIR="$LOGS/shared" "$@" timeout --signal=INT --kill-after=120 "$SHARD_LIMIT_S" "$PY" -m pytest -ra -p no:cacheprovider --basetemp="$LOGS/tmp-$name" \
        "${ARGS[@]}" >"$LOGS/$name.log" 2>&1
}

ARGS=("$@")
start=$SECONDS
# Install both Slurm versions first, one after the other: three fixtures running apt-get at once would fight
# over dpkg's lock. Where the cluster cannot run, the fixtures skip and say why; a failed install is theirs
# to report too.
if slurm/cluster.sh can-run >/dev/null 2>&1; then
    slurm/cluster.sh install >"$LOGS/install-22.05.log" 2>&1 || echo "=== slurm/cluster.sh install failed: $LOGS/install-22.05.log"
    slurm/cluster.sh install --slurm 24.11 >"$LOGS/install-24.11.log" 2>&1 ||
        echo "=== slurm/cluster.sh install --slurm 24.11 failed: $LOGS/install-24.11.log"
    echo "=== Slurm packages ready: $((SECONDS - start)) s"
fi
shard a &
pid_a=$!
shard b HPC_SFT_SLURM_VERSION=24.11 HPC_SFT_SLURM_PREFIX=hs24 HPC_SFT_SLURM_ROOT=/tmp/hpc-sft-slurm24 \
    HPC_SFT_SLURM_NET=10.201.0 HPC_SFT_SLURM_CTLD_PORT=6917 HPC_SFT_SLURM_SLURMD_PORT=6918 \
    HPC_SFT_SLURM_DBD_PORT=6919 HPC_SFT_SLURM_DB_PORT=6920 &
pid_b=$!
shard c HPC_SFT_SLURM_PREFIX=hs2 HPC_SFT_SLURM_ROOT=/tmp/hpc-sft-slurm2 \
    HPC_SFT_SLURM_NET=10.202.0 HPC_SFT_SLURM_CTLD_PORT=7017 HPC_SFT_SLURM_SLURMD_PORT=7018 \
    HPC_SFT_SLURM_DBD_PORT=7019 HPC_SFT_SLURM_DB_PORT=7020 &
pid_c=$!
tails=()
for name in a b c; do
    tail -n +1 -F "$LOGS/$name.log" 2>/dev/null | sed -u "s/^/[$name] /" &
    tails+=($!)
done
wait "$pid_a"; rc_a=$?
wait "$pid_b"; rc_b=$?
wait "$pid_c"; rc_c=$?
sleep 1
kill "${tails[@]}" 2>/dev/null
pkill -P $$ -x tail 2>/dev/null
wait 2>/dev/null
echo "=== shard a (cluster tests, Slurm 22.05): exit $rc_a | b (other tests + core on Slurm 24.11): exit $rc_b |" \
     "c (cluster tests, a second Slurm 22.05 cluster): exit $rc_c"
echo "=== all shards: $((SECONDS - start)) s; full logs in $LOGS"
for name in a b c; do
    rc_var=rc_$name
    [ "${!rc_var}" = 124 ] && echo "=== shard $name ran past ${SHARD_LIMIT_S}s (hung?): interrupted; where it stood is in $LOGS/$name.log"
done
for name in a b c; do grep -E '^(FAILED|ERROR|SKIPPED)|passed|failed' "$LOGS/$name.log" | tail -n 30 | sed "s/^/[$name] /"; done
# pytest exit 5 = nothing collected in a shard (e.g. a -k filter): not a failure of the others
for rc in $rc_a $rc_b $rc_c; do if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then exit "$rc"; fi; done
[ "$rc_a" = 5 ] && [ "$rc_b" = 5 ] && [ "$rc_c" = 5 ] && exit 5
exit 0
