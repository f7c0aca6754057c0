"""The Slurm CLI client: squeue, scontrol, sacct, scancel with one timeout and error handling (SubmitError)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from ... import jobs
from ...errors import SubmitError
from .nodelist import expand_nodelist


def queued_for(ckpt_output_dir: str) -> list[str]:
    """Ids of recorded jobs that write ckpt_output_dir and are still queued or running."""
    target = str(Path(ckpt_output_dir).resolve())
    ids = [r["job_id"] for r in jobs.all_records()
           if r.get("ckpt_output_dir") == target and jobs.executor_of(r) == "slurm"]
    if not ids:
        return []
    alive = set(run(["squeue", "-h", "-r", "-o", "%i"]).split())  # -r: one line per array task
    return [i for i in ids if i in alive]


def run(cmd: list[str], timeout: float = 30) -> str:
    """Run a Slurm client command; SubmitError with its stderr when it fails or is missing."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SubmitError(f"{cmd[0]} not found", "run this on a Slurm login node (or load the slurm module)") \
            from None
    except subprocess.TimeoutExpired:
        raise SubmitError(f"{' '.join(cmd)} did not answer in {timeout:.0f}s", "check slurmctld") from None
    if proc.returncode != 0:
        raise SubmitError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


# States in which a job may still run and write (`hpc-sft logs --follow` keeps following).
LIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING"})


def fields(line: str) -> dict[str, str]:
    """The KEY=VALUE fields of one `scontrol show ... -o` line. Pure."""
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def state_from_scontrol(text: str) -> dict:
    """{'state', 'restarts', 'elapsed'} from `scontrol show job -o JOB`. Pure."""
    job = fields(text)
    return {"state": job.get("JobState", "UNKNOWN"), "restarts": int(job.get("Restarts", 0)),
            "elapsed": job.get("RunTime", "")}


def requeue_allowed(text: str) -> bool:
    """Whether Slurm would requeue the job, from `scontrol show job -o JOB` (Requeue=0 where the site clears
    --requeue: `scontrol requeue` is refused and preemption cancels it). Pure."""
    return fields(text).get("Requeue", "1") != "0"


def can_requeue(job_id: str) -> bool:
    """Ask Slurm whether job_id may be requeued (True when it cannot tell: a plain requeue is tried then)."""
    try:
        return requeue_allowed(run(["scontrol", "show", "job", "-o", str(job_id)]))
    except SubmitError:
        return True


def excluded_nodes(text: str) -> list[str]:
    """The hosts a job may not run on, from `scontrol show job -o JOB` (ExcNodeList, expanded). Pure."""
    value = fields(text).get("ExcNodeList", "(null)")
    return [] if value in ("", "(null)") else expand_nodelist(value)


def state_from_sacct(text: str) -> dict:
    """The same from `sacct -X -n -P -o State,Elapsed` (its last line: the newest run; 'CANCELLED by 0' ->
    CANCELLED). Pure."""
    lines = text.strip().splitlines()
    state, _, elapsed = (lines[-1] if lines else "UNKNOWN|").partition("|")
    return {"state": state.split()[0] if state.strip() else "UNKNOWN", "restarts": None, "elapsed": elapsed}


def slurm_state(job_id: str) -> dict:
    """{'state', 'restarts', 'elapsed'}: scontrol while slurmctld remembers the job, else sacct."""
    try:
        return state_from_scontrol(run(["scontrol", "show", "job", "-o", str(job_id)]))
    except SubmitError:  # purged from slurmctld's memory: ask the accounting database
        return state_from_sacct(run(["sacct", "-j", str(job_id), "-X", "-n", "-P", "-o", "State,Elapsed"]))


def cancel(job_id: str) -> None:
    run(["scancel", str(job_id)])
