"""The status record of a run directory (hpc_sft_status.json): each stop, the outcome; `hpc-sft status` reads it."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .layout import STATUS_FILE

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
                           "stop": "stopped"}[decision.action])
    write_status(ckpt_dir, status)
    return status
