"""One writer per ckpt_output_dir: a lock file naming the Slurm job (or host:pid) that trains into it."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Optional

from ..errors import TrainingError
from .layout import LOCK_FILE


def owner_here(job_id: Optional[str]) -> dict:
    return {"job_id": job_id, "host": socket.gethostname(), "pid": os.getpid()}


def alive(owner: dict) -> bool:
    """Is the lock's owner still running (its Slurm job queued/running, or its process on this host)?"""
    if owner.get("job_id") and shutil.which("squeue"):
        try:
            out = subprocess.run(["squeue", "-h", "-j", str(owner["job_id"]), "-o", "%T"], capture_output=True,
                                 text=True, timeout=30)
        except subprocess.TimeoutExpired:  # slurmctld not answering: assume the owner lives (never steal)
            return True
        return out.returncode == 0 and bool(out.stdout.strip())
    if owner.get("host") == socket.gethostname() and owner.get("pid"):
        try:
            os.kill(int(owner["pid"]), 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return False


def holder(ckpt_dir: Path) -> Optional[dict]:
    path = Path(ckpt_dir) / LOCK_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def check_free(ckpt_dir: Path, job_id: Optional[str] = None, error: type = TrainingError) -> None:
    """`error` (TrainingError on a node; SubmitError at submit: nothing is queued) if another live job or
    process trains into ckpt_dir."""
    owner = holder(ckpt_dir)
    if owner and (job_id is None or str(owner.get("job_id")) != str(job_id)) and alive(owner):
        who = f"Slurm job {owner['job_id']}" if owner.get("job_id") else f"pid {owner.get('pid')} on {owner.get('host')}"
        raise error(in_use(ckpt_dir, who), IN_USE_FIX)


IN_USE_FIX = "wait for it, cancel it, or choose another ckpt_output_dir"


def in_use(ckpt_dir, who: str) -> str:
    """The one message for a ckpt_output_dir another writer holds (its fix: IN_USE_FIX)."""
    return f"ckpt_output_dir {ckpt_dir} is in use by {who}"


def acquire(ckpt_dir: Path, job_id: Optional[str]) -> Path:
    """Take the lock (a requeued run of the same job takes it over)."""
    Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
    check_free(ckpt_dir, job_id)
    path = Path(ckpt_dir) / LOCK_FILE
    tmp = path.with_name(f"{LOCK_FILE}.{socket.gethostname()}.{os.getpid()}")
    tmp.write_text(json.dumps(owner_here(job_id)))
    os.replace(tmp, path)
    return path


def hand_over(ckpt_dir: Path, job_id: str) -> None:
    """A resubmit chain: the next job of the run owns the directory from now on (it takes the lock over when
    it starts; until then nobody else may train into it)."""
    path = Path(ckpt_dir) / LOCK_FILE
    tmp = path.with_name(f"{LOCK_FILE}.{socket.gethostname()}.{os.getpid()}")
    tmp.write_text(json.dumps({"job_id": str(job_id), "host": None, "pid": None}))
    os.replace(tmp, path)


def release(ckpt_dir: Path) -> None:
    owner = holder(ckpt_dir)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        (Path(ckpt_dir) / LOCK_FILE).unlink(missing_ok=True)
