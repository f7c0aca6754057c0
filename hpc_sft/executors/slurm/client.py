"""The Slurm CLI client: squeue, scontrol, sacct, scancel with one timeout and error handling (SubmitError)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ... import jobs
from ...errors import SubmitError


def queued_for(ckpt_output_dir: str) -> list[str]:
    """Ids of recorded jobs that write ckpt_output_dir and are still queued or running."""
    folder, target = jobs.home() / "jobs", str(Path(ckpt_output_dir).resolve())
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []
    ids = [r["job_id"] for r in records if r.get("ckpt_output_dir") == target and not jobs.is_local(r)]
    if not ids:
        return []
    alive = set(run(["squeue", "-h", "-o", "%i"]).split())
    return [i for i in ids if i in alive]


def run(cmd: list[str], timeout: float = 30) -> str:
    """Run a Slurm client command; SubmitError with its stderr when it fails or is missing."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SubmitError(f"{cmd[0]} not found. Fix: run this on a Slurm login node (or load the slurm module)") \
            from None
    except subprocess.TimeoutExpired:
        raise SubmitError(f"{' '.join(cmd)} did not answer in {timeout:.0f}s. Fix: check slurmctld") from None
    if proc.returncode != 0:
        raise SubmitError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def slurm_state(job_id: str) -> dict:
    """{'state', 'restarts', 'elapsed'}: scontrol while slurmctld remembers the job, else sacct."""
    try:
        fields = dict(item.split("=", 1) for item in run(["scontrol", "show", "job", "-o", str(job_id)]).split()
                      if "=" in item)
        return {"state": fields.get("JobState", "UNKNOWN"), "restarts": int(fields.get("Restarts", 0)),
                "elapsed": fields.get("RunTime", "")}
    except SubmitError:  # purged from slurmctld's memory: ask the accounting database
        out = run(["sacct", "-j", str(job_id), "-X", "-n", "-P", "-o", "State,Elapsed"]).strip()
        state, _, elapsed = (out.splitlines()[-1] if out else "UNKNOWN|").partition("|")
        return {"state": state.split()[0] if state else "UNKNOWN", "restarts": None, "elapsed": elapsed}


def cancel(job_id: str) -> None:
    run(["scancel", str(job_id)])
