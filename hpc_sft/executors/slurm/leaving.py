"""How the nodes of one attempt leave: each marks that its training ended; node 0 waits for all of them,
then requeues the job (held, without a hung node, where a watchdog named one)."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

from ...errors import SubmitError
from ...rundir.layout import node_stopped_file
from . import client, watchdog

log = logging.getLogger("hpc_sft.node")


def stop_wait_s() -> float:
    return float(os.environ.get("HPC_SFT_NODES_STOP_WAIT_S", "120"))


def mark_stopped(ckpt: Path, attempt: str, node_rank: int) -> None:
    (ckpt / node_stopped_file(attempt, node_rank)).write_text("")


def wait_for_nodes(ckpt: Path, attempt: str, nnodes: int, timeout_s: float, forget: bool = True) -> list[int]:
    """Node 0 before a requeue: wait until every node's training processes have ended (a requeue kills the
    whole job at once); the ranks still missing after timeout_s. The markers are removed unless forget=False."""
    paths = [ckpt / node_stopped_file(attempt, rank) for rank in range(nnodes)]
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths) and time.monotonic() < deadline:
        time.sleep(0.5)
    missing = [rank for rank, p in enumerate(paths) if not p.exists()]
    for path in paths if forget else ():
        path.unlink(missing_ok=True)
    return missing


def lost_nodes(ckpt: Path, env, nnodes: int) -> Optional[str]:
    """Node 0 after its training failed: a node that has not marked its stop within stop_wait_s is taken as
    lost (dead host, killed slurmd): it gets a hang record, so that the requeue leaves its host out, and a
    stop mark on its behalf. The hang's description, or None when every node stopped (a real failure)."""
    attempt = env.attempt
    missing = wait_for_nodes(ckpt, attempt, nnodes, stop_wait_s(), forget=False)
    for rank in missing:
        watchdog.record_lost(ckpt, attempt, rank, env.hostnames[rank], stop_wait_s())
        mark_stopped(ckpt, attempt, rank)
    return watchdog.describe_hang(watchdog.hang_records(ckpt, attempt)) if missing else None


def wait_until_stopped(ckpt: Path, env, nnodes: int) -> None:
    """Node 0 before a requeue: every node's training has ended (or stop_wait_s passed; said in the log)."""
    missing = wait_for_nodes(ckpt, env.attempt, nnodes, stop_wait_s())
    if missing:
        log.warning("node(s) %s still running %.0fs after node 0 stopped; requeueing anyway",
                    ",".join(map(str, missing)), stop_wait_s())


def requeue_without_stuck(ckpt: Path, env) -> None:
    """Node 0, after wait_until_stopped: requeue, without the hosts whose hang record names a stuck rank."""
    hosts = watchdog.stuck_hosts(ckpt, env.attempt)
    if hosts:
        requeue_excluding(env.job_id, hosts)
    else:
        requeue(env.job_id)


def requeue_excluding(job_id: str, hosts: list[str]) -> None:
    """Requeue held, add `hosts` to the job's excluded nodes, release: the next run never lands there."""
    try:
        before = client.excluded_nodes(client.run(["scontrol", "show", "job", "-o", job_id]))
        client.run(["scontrol", "requeuehold", job_id], timeout=60)
    except SubmitError as exc:
        log.warning("requeue of %s without %s: %s; trying a plain requeue", job_id, ",".join(hosts), exc)
        return requeue(job_id)
    try:
        client.run(["scontrol", "update", f"JobId={job_id}", f"ExcNodeList={','.join(sorted({*before, *hosts}))}"])
        log.info("requeued job %s without node(s) %s", job_id, ",".join(hosts))
    except SubmitError as exc:
        log.warning("job %s: could not exclude %s: %s", job_id, ",".join(hosts), exc)
    finally:
        client.run(["scontrol", "release", job_id])  # never leave it held


def requeue(job_id: str) -> None:
    """Put this job back in the queue (same id, SLURM_RESTART_COUNT + 1)."""
    try:
        client.run(["scontrol", "requeue", str(job_id)], timeout=60)
        log.info("requeued job %s", job_id)
    except SubmitError as exc:  # e.g. Slurm is already requeueing it after a preemption
        log.warning("scontrol requeue %s: %s", job_id, exc)
