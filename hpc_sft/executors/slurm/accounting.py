"""GPU- or CPU-hours of a Slurm job from sacct, every requeued attempt included, and how many interruptions lost."""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterable, Optional

from ...errors import SubmitError
from . import client

# -X: the allocation line only (no .batch/.extern/.0 steps); --duplicates: every requeued attempt, not just the
# newest (without it sacct 22.05 shows only the last run of a requeued job).
FIELDS = ("JobID", "JobIDRaw", "State", "Start", "End", "ElapsedRaw", "AllocTRES", "AllocCPUS", "NNodes",
          "Partition")
NOT_A_TIME = ("Unknown", "None", "")
# The newest attempt in one of these was interrupted too (requeued and waiting, or killed by preemption).
INTERRUPTED = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "NODE_FAIL"})
SLACK = timedelta(seconds=1)  # sacct times are whole seconds; metric timestamps have microseconds


def sacct_command(job_id: str) -> list[str]:
    """sacct for a job (or an array: every task) with one line per allocated attempt, requeued ones included."""
    return ["sacct", "-j", str(job_id), "-X", "--duplicates", "--parsable2", "--noheader",
            "-o", ",".join(FIELDS)]


@dataclass(frozen=True)
class Attempt:
    """One allocation of a job: its first run or a rerun after a requeue (one sacct line)."""

    job_id: str  # JobID: 123, or 123_4 for an array task
    raw_id: str  # JobIDRaw: SLURM_JOB_ID inside the attempt (the id the status record's stops carry)
    state: str  # REQUEUED for an attempt that was requeued; COMPLETED, RUNNING, ... for the newest
    start: datetime
    end: Optional[datetime]  # None while it runs
    elapsed_s: int
    gpus: int  # the whole allocation's, all nodes together
    cpus: int
    nodes: int
    partition: str = ""

    @property
    def until(self) -> datetime:
        return self.end or self.start + timedelta(seconds=self.elapsed_s)


def parse_tres(text: str) -> dict[str, str]:
    """`billing=8,cpu=8,gres/gpu=8,mem=64G,node=1` -> {'billing': '8', ...}. Pure."""
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def gpus_of(tres: dict[str, str]) -> int:
    """The GPUs of an allocation: gres/gpu=N (Slurm's total), else the sum of typed gres/gpu:TYPE=N. Pure."""
    if "gres/gpu" in tres:
        return int(tres["gres/gpu"])
    return sum(int(v) for k, v in tres.items() if k.startswith("gres/gpu:"))


def parse_sacct(text: str) -> list[Attempt]:
    """The allocated attempts in `sacct_command` output, oldest first. Lines that never started (PENDING, the
    not-yet-split `123_[2-5%2]` line of an array) are left out: they were allocated nothing. Pure."""
    attempts = []
    for line in text.splitlines():
        values = line.split("|")
        if len(values) != len(FIELDS):
            continue
        row = dict(zip(FIELDS, values))
        if row["Start"] in NOT_A_TIME or "[" in row["JobID"]:
            continue
        tres = parse_tres(row["AllocTRES"])
        attempts.append(Attempt(
            job_id=row["JobID"], raw_id=row["JobIDRaw"], state=(row["State"].split() or ["UNKNOWN"])[0],
            start=datetime.fromisoformat(row["Start"]),
            end=None if row["End"] in NOT_A_TIME else datetime.fromisoformat(row["End"]),
            elapsed_s=int(row["ElapsedRaw"] or 0), gpus=gpus_of(tres),
            cpus=int(tres.get("cpu") or row["AllocCPUS"] or 0), nodes=int(row["NNodes"] or 0),
            partition=row["Partition"]))
    return sorted(attempts, key=lambda a: a.start)


def by_task(attempts: Iterable[Attempt]) -> dict[str, list[Attempt]]:
    """Attempts grouped by JobID: one run each (a plain job is one group, an array one group per task). Pure."""
    groups: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        groups.setdefault(attempt.job_id, []).append(attempt)
    return groups


def query(job_id: str, timeout: float = 15) -> list[Attempt]:
    """Every allocated attempt of a job or array from sacct; SubmitError when sacct fails or knows none."""
    attempts = parse_sacct(client.run(sacct_command(job_id), timeout=timeout))
    if not attempts:
        raise SubmitError(f"sacct has no allocation of job {job_id}",
                          "wait until it starts (slurmdbd learns of it a few seconds later)")
    return attempts


@dataclass(frozen=True)
class Usage:
    """The unit-hours (unit × hours: GPU-hours, or CPU-hours when no GPU was allocated) of one run or a sum.

    Every second of every allocated attempt (sacct ElapsedRaw × the attempt's GPUs, else CPUs) is in `total_h`
    and in exactly one of:
    - training: the kept training steps. A step's time is the gap from the previous per-step metric record of the
      same attempt to its own (the attempt's first step: the median gap, at most the time since the attempt
      started); periodic and epoch-end saves between steps count as training (an uninterrupted run pays them).
    - `redone_h`: steps an attempt trained after the last state it saved, which a later attempt of the same job
      trained again (samples_seen above that attempt's stop's samples_seen, which is the saved state, and not
      above the newest samples_seen a later attempt logged; without a stop, above the first samples_seen a later
      attempt logged, minus one).
    - `restarts_h` (saves and restarts): the rest of every attempt that a single uninterrupted run would not have
      had: an interrupted attempt's time after its last step (the save at the signal, shutdown, requeue) and a
      rerun's time before its first step (start-up, data, rendezvous, resume). An attempt that ended before any
      step, followed by another, is all of it here.
    - `overhead_h` (start-up and end): what an uninterrupted run pays too: the start-up of the first attempt that
      reached a step (else of the newest attempt) and the end of the newest attempt (final save, model check)
      unless it too was interrupted. A still-running attempt's time since its last step counts as training.
    An attempt is interrupted when a later one follows it, or when its sacct state is one of INTERRUPTED.
    The wait in the queue between attempts is allocated to nobody and is not counted. `lost_h` = redone + saves and
    restarts: what the interruptions cost.
    """

    unit: str  # "GPU" | "CPU"
    total_h: float
    redone_h: float
    restarts_h: float
    overhead_h: float
    attempts: int
    interrupted: int
    partition: str = ""

    @property
    def lost_h(self) -> float:
        return self.redone_h + self.restarts_h

    @property
    def training_h(self) -> float:
        return self.total_h - self.lost_h - self.overhead_h

    def as_dict(self) -> dict:
        return {**asdict(self), "lost_h": self.lost_h, "training_h": self.training_h}


def _when(record: dict) -> datetime:
    return datetime.fromisoformat(record["timestamp"])


def _steps_in(attempt: Attempt, records: list[dict]) -> list[dict]:
    """The per-step records written during an attempt (by time), oldest first."""
    lo, hi = attempt.start, attempt.until + SLACK
    return sorted((r for r in records if lo <= _when(r) <= hi), key=_when)


def _resume_point(attempt: Attempt, restart: int, stops: list[dict], later_first: int) -> int:
    """samples_seen of the state the next attempt resumed from: the stop this attempt recorded (the one with its
    SLURM_JOB_ID and SLURM_RESTART_COUNT, the attempt's index), else one below the first step a later attempt
    logged. (Not by time: a stop is written a moment before the requeue, and sacct's End can read earlier, in whole
    seconds.)"""
    for stop in stops:
        if str(stop.get("job_id")) == attempt.raw_id and stop.get("restart") == restart:
            return int(stop.get("samples_seen") or 0)
    return later_first - 1


def usage(attempts: list[Attempt], metrics_records: list[dict], stops: list[dict]) -> Usage:
    """The Usage of one run (one job or one array task: every attempt of it, oldest first) from its per-step
    metric records (samples_seen, timestamp) and its status record's stops (job_id, restart, samples_seen). Pure;
    the definitions are in Usage's docstring."""
    attempts = sorted(attempts, key=lambda a: a.start)
    unit = "GPU" if any(a.gpus for a in attempts) else "CPU"
    per = [a.gpus if unit == "GPU" else a.cpus for a in attempts]
    steps = [_steps_in(a, metrics_records) for a in attempts]
    gaps = [(_when(r) - _when(q)).total_seconds() for s in steps for q, r in zip(s, s[1:])]
    typical = statistics.median(gaps) if gaps else 0.0
    first_real = next((i for i, s in enumerate(steps) if s), len(attempts) - 1)
    interrupted = [i < len(attempts) - 1 or a.state in INTERRUPTED for i, a in enumerate(attempts)]
    redone = restarts = overhead = 0.0
    for i, (attempt, mine) in enumerate(zip(attempts, steps)):
        later = [r["samples_seen"] for s in steps[i + 1:] for r in s]  # what later attempts trained
        durations = _durations(attempt, mine, typical)
        redo = 0.0
        if later:
            resume = _resume_point(attempt, i, stops, min(later))
            redo = sum(d for r, d in zip(mine, durations) if resume < r["samples_seen"] <= max(later))
        trained = sum(durations) - redo
        startup = (_when(mine[0]) - attempt.start).total_seconds() - durations[0] if mine else attempt.elapsed_s
        startup = min(max(startup, 0.0), attempt.elapsed_s)
        tail = max(attempt.elapsed_s - startup - trained - redo, 0.0)
        if i == len(attempts) - 1 and attempt.end is None:  # still running: the step in progress is training
            tail = 0.0
        kept_startup = startup if i == first_real else 0.0
        kept_tail = tail if not interrupted[i] else 0.0
        overhead += per[i] * (kept_startup + kept_tail)
        restarts += per[i] * (startup - kept_startup + tail - kept_tail)
        redone += per[i] * redo
    total = sum(n * a.elapsed_s for n, a in zip(per, attempts))
    parts = sorted({a.partition for a in attempts if a.partition})
    return Usage(unit, total / 3600, redone / 3600, restarts / 3600, overhead / 3600, len(attempts),
                 sum(interrupted), ",".join(parts))


def _durations(attempt: Attempt, mine: list[dict], typical: float) -> list[float]:
    """Each step's seconds: the gap from the previous step of the attempt; the first step the typical gap (at most
    the time since the attempt started)."""
    if not mine:
        return []
    first = min(typical, max((_when(mine[0]) - attempt.start).total_seconds(), 0.0))
    return [first] + [(_when(r) - _when(q)).total_seconds() for q, r in zip(mine, mine[1:])]


def combined(usages: Iterable[Usage]) -> list[Usage]:
    """A sweep's usage: the sum over its tasks, one Usage per unit (GPU tasks and CPU tasks are not added). Pure."""
    sums: dict[str, Usage] = {}
    for u in usages:
        s = sums.get(u.unit)
        sums[u.unit] = u if s is None else Usage(
            u.unit, s.total_h + u.total_h, s.redone_h + u.redone_h, s.restarts_h + u.restarts_h,
            s.overhead_h + u.overhead_h, s.attempts + u.attempts, s.interrupted + u.interrupted,
            ",".join(sorted(set(filter(None, (s.partition + "," + u.partition).split(","))))))
    return list(sums.values())


def usage_lines(u: Usage) -> list[str]:
    """What `hpc-sft status` prints for one Usage (2 decimals; 4 for runs under 0.1 unit-hours)."""
    def h(hours: float) -> str:
        return f"{hours:.{2 if u.total_h >= 0.1 else 4}f}"

    where = f" on {u.partition}" if u.partition else ""
    return [f"{u.unit}-hours: {h(u.total_h)} used, {h(u.lost_h)} lost to interruptions "
            f"(redone {h(u.redone_h)}, saves and restarts {h(u.restarts_h)})",
            f"  {u.attempts} allocation{'s' if u.attempts != 1 else ''}{where}, {u.interrupted} requeued; "
            f"start-up and end of the run (an uninterrupted run pays it too): {h(u.overhead_h)}"]


def run_inputs(ckpt_dir: Path) -> tuple[list[dict], list[dict]]:
    """The per-step metric records and the stops of a run directory (no torch)."""
    from ...console import new_records
    from ...rundir.layout import METRICS_FILE
    from ...rundir.status import read_status

    records, _ = new_records(Path(ckpt_dir) / METRICS_FILE, 0)
    return records, read_status(Path(ckpt_dir)).get("stops", [])


def job_usage(job_id: str, ckpt_dir_of: Callable[[str], Path]) -> list[Usage]:
    """The usage of a job, or of an array summed over its tasks (`ckpt_dir_of(task JobID)`: that task's run
    directory); SubmitError when sacct cannot say."""
    found = []
    for task, attempts in by_task(query(job_id)).items():
        records, stops = run_inputs(ckpt_dir_of(task))
        found.append(usage(attempts, records, stops))
    return combined(found)


def status_block(job_ids, ckpt_dir_of: Callable[[str], Path]) -> dict:
    """`hpc-sft status`'s accounting of a job, or of a sweep's arrays summed (`job_ids`: one id or a list):
    {'usage': [...], 'lines': [...]}, or the reason it is unavailable (accounting off, sacct missing or slow,
    job not in the database yet, run directory unreadable)."""
    ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
    try:
        found = combined(u for job_id in ids for u in job_usage(job_id, ckpt_dir_of))
    except (SubmitError, OSError, ValueError) as exc:
        reason = getattr(exc, "problem", "") or str(exc)
        return {"unavailable": reason, "lines": [f"accounting: unavailable ({reason})"]}
    return {"usage": [u.as_dict() for u in found], "lines": [line for u in found for line in usage_lines(u)]}
