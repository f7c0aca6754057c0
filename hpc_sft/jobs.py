"""Job records (~/.hpc-sft/jobs/ID.json: Slurm jobs and local runs), local-run state and cancel (no torch; the Slurm
queries live in executors.slurm.client)."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Optional

from .errors import ConfigError


def home() -> Path:
    return Path(os.environ.get("HPC_SFT_HOME", "~/.hpc-sft")).expanduser()


def record(job_id: str, folder: Path, nodes: int, ckpt_output_dir: str) -> Path:
    """Remember where a job keeps its files, so status/logs work from any shell later."""
    path = home() / "jobs" / f"{job_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"job_id": str(job_id), "executor": "slurm", "folder": str(folder), "nodes": nodes,
            "ckpt_output_dir": str(ckpt_output_dir), "submitted": time.time()}
    path.write_text(json.dumps(data, indent=1))
    return path


def write(rec: dict) -> Path:
    """Atomically (re)write a record."""
    path = home() / "jobs" / f"{rec['job_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, path)
    return path


def record_local(ckpt_output_dir: str, log: str) -> dict:
    """Record a local run now starting in this process (id local-YYYYmmdd-HHMMSS-PID)."""
    now = time.time()
    rec = {"job_id": f"local-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{os.getpid()}",
           "executor": "local", "folder": str(Path(log).parent), "log": log, "nodes": 1,
           "ckpt_output_dir": str(ckpt_output_dir), "host": socket.gethostname(), "pid": os.getpid(),
           "submitted": now, "state": "RUNNING"}
    write(rec)
    return rec


def update(rec: dict, **changes) -> dict:
    """Set fields of a local run's record (state FINISHED | INTERRUPTED | FAILED also sets `ended`)."""
    rec.update(changes)
    if changes.get("state") in ("FINISHED", "INTERRUPTED", "FAILED"):
        rec["ended"] = time.time()
    write(rec)
    return rec


def executor_of(rec: dict) -> str:
    """Which executor wrote a record (records older than the 'executor' field are Slurm jobs)."""
    return rec.get("executor", "slurm")


def all_records() -> list[dict]:
    """Every readable record, oldest first (by file time)."""
    folder = home() / "jobs"
    paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    records = []
    for path in paths:
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return records


def for_dir(ckpt_output_dir) -> Optional[dict]:
    """The most recent record of a run writing ckpt_output_dir (None: none recorded)."""
    target = str(Path(ckpt_output_dir).resolve())
    found = [r for r in all_records() if str(Path(r.get("ckpt_output_dir", "")).resolve()) == target]
    return found[-1] if found else None


def pid_alive(rec: dict) -> bool:
    if rec.get("host") != socket.gethostname():
        return True  # cannot tell from here; trust the record
    try:
        os.kill(int(rec["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def local_state(rec: dict) -> dict:
    """{'state', 'restarts', 'elapsed'} of a local run; RUNNING whose process is gone reads DIED."""
    state = rec.get("state", "UNKNOWN")
    if state == "RUNNING" and not pid_alive(rec):
        state = "DIED"
    end = rec.get("ended") or time.time()
    minutes, secs = divmod(int(end - rec.get("submitted", end)), 60)
    return {"state": state, "restarts": None, "elapsed": f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"}


def cancel_local(rec: dict) -> bool:
    """SIGTERM to a running local run (it saves a full state and stops); False when it is not running."""
    if rec.get("state") != "RUNNING" or rec.get("host") != socket.gethostname() or not pid_alive(rec):
        return False
    os.kill(int(rec["pid"]), signal.SIGTERM)
    return True


def lookup(job_id: Optional[str]) -> dict:
    """The record of job_id (None: the most recent submission or local run)."""
    folder = home() / "jobs"
    if job_id is None:
        records = all_records()
        if not records:
            raise ConfigError("JOB", f"no jobs recorded in {folder}",
                              "submit one with `hpc-sft submit RECIPE` (local runs record themselves too), "
                              "or pass a ckpt_output_dir")
        return records[-1]
    path = folder / f"{job_id}.json"
    if not path.is_file():
        raise ConfigError("JOB", f"no record of job {job_id} in {folder}",
                          "pass a job id printed by `hpc-sft submit` (or set HPC_SFT_HOME)")
    return json.loads(path.read_text())
