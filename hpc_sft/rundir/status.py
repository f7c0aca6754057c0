"""The status record of a run directory (hpc_sft_status.json): each stop, the outcome, the resubmit chain;
`hpc-sft status` reads it. Also the record of chains the user cancelled."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .layout import CANCELLED_FILE, STATUS_FILE

if TYPE_CHECKING:
    from ..requeue import Decision, StateFacts


def read_status(ckpt_dir: Path) -> dict:
    path = Path(ckpt_dir) / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else {"stops": []}


def write_status(ckpt_dir: Path, status: dict) -> None:
    """Atomically replace the status record."""
    path = Path(ckpt_dir) / STATUS_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(status, indent=1))
    os.replace(tmp, path)


def record_stop(ckpt_dir: Path, job_id: str, restarts: int, decision: Decision,
                state: Optional[StateFacts], last_state: Optional[str]) -> dict:
    """Append this run's stop to the status record and set the outcome."""
    status = read_status(ckpt_dir)
    status.setdefault("stops", []).append({
        "restart": restarts, "job_id": job_id, "action": decision.action, "reason": decision.reason,
        "samples_seen": state.samples_seen if state else 0, "time": time.time()})
    status.update(job_id=job_id, restarts=restarts, last_complete_state=last_state,
                  samples_seen=state.samples_seen if state else 0,
                  outcome={"finish": "finished", "requeue": "requeued", "give_up": "gave up",
                           "resubmit": "resubmitted",
                           "stop": "stopped"}[decision.action])
    write_status(ckpt_dir, status)
    return status


def record_successor(ckpt_dir: Path, chain: tuple[str, ...]) -> dict:
    """A site that forbids requeue: the run goes on as a chain of jobs (first job first, newest last)."""
    status = read_status(ckpt_dir)
    status["chain"] = [str(job_id) for job_id in chain]
    write_status(ckpt_dir, status)
    return status


def chain_of(ckpt_dir: Path, job_id: str) -> list[str]:
    """The jobs of job_id's resubmit chain from job_id on (just [job_id] when it has no successor)."""
    chain = read_status(ckpt_dir).get("chain") or []
    return chain[chain.index(str(job_id)):] if str(job_id) in chain else [str(job_id)]


def first_of_chain(ckpt_dir: Path, job_id: str) -> str:
    chain = read_status(ckpt_dir).get("chain") or []
    return chain[0] if str(job_id) in chain else str(job_id)


def cancelled_chains(ckpt_dir: Path) -> list[str]:
    path = Path(ckpt_dir) / CANCELLED_FILE
    try:
        return list(json.loads(path.read_text()))
    except (OSError, ValueError):
        return []


def record_cancelled(ckpt_dir: Path, first_job_id: str) -> None:
    """Before scancel: no job of this chain submits a successor any more (written atomically)."""
    path = Path(ckpt_dir) / CANCELLED_FILE
    if not Path(ckpt_dir).is_dir():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(sorted({*cancelled_chains(ckpt_dir), str(first_job_id)})))
    os.replace(tmp, path)
