"""Requeue decisions (pure) and the status record users read with `hpc-sft status`."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .progress import STATUS_FILE


@dataclass(frozen=True)
class StateFacts:
    """What the newest complete full state says."""

    epoch: int
    samples_seen: int
    global_step: Optional[int]  # set for mid-epoch (on-demand) saves


@dataclass(frozen=True)
class Decision:
    action: str  # "finish" | "requeue" | "give_up"
    reason: str


def finished(state: Optional[StateFacts], num_epochs: int) -> bool:
    """Training is complete when the newest state is the last epoch's end-of-epoch save."""
    return state is not None and state.global_step is None and state.epoch >= num_epochs - 1


def decide(state: Optional[StateFacts], num_epochs: int, restarts: int, max_requeues: int,
           stops: list[dict], why: str) -> Decision:
    """finish, requeue or give up, from facts on disk, the restart count and earlier stops."""
    if finished(state, num_epochs):
        return Decision("finish", "training complete")
    samples = state.samples_seen if state else 0
    if restarts >= max_requeues:
        return Decision("give_up", f"{why}; requeue budget max_requeues={max_requeues} is used up "
                                   f"({samples} samples seen). Fix: raise slurm.max_requeues or the time limit")
    earlier = [s.get("samples_seen") or 0 for s in stops]
    if len(earlier) >= 2 and samples <= earlier[-1] <= earlier[-2]:
        return Decision("give_up", f"{why}; no progress in the last two runs (stuck at {samples} samples). "
                                   "Fix: make the time limit longer than startup + one checkpoint")
    return Decision("requeue", f"{why}; requeueing to resume from {samples} samples")


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
                  outcome={"finish": "finished", "requeue": "requeued", "give_up": "gave up"}[decision.action])
    write_status(ckpt_dir, status)
    return status
