"""SlurmJob: the handle sft(executor='slurm') returns (job id, state, wait, cancel, log paths).

It asks Slurm, not submitit's result files, whether the job has ended: a requeued job keeps its id, and a
result file written by an earlier attempt must never decide the outcome of the current one. Where the site
forbids requeue the run goes on as a chain of jobs; the handle keeps the first id and follows the chain."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

from ...errors import SubmitError, TrainingError
from ...result import TrainingResult
from ...rundir.status import chain_of, read_status, record_cancelled
from . import client

log = logging.getLogger("hpc_sft.slurm")
# States after which Slurm runs the job no more. PREEMPTED is one only where the site does not requeue:
# with requeue it passes within seconds (PREEMPTED -> REQUEUED -> PENDING), so it counts once it lasts.
ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                   "DEADLINE"})
PREEMPTED_FOR_GOOD_S = 60.0


def current_job(job_id: str, ckpt_output_dir: Optional[Path]) -> str:
    """The newest job of job_id's resubmit chain (job_id itself where the site requeues)."""
    return chain_of(ckpt_output_dir, job_id)[-1] if ckpt_output_dir else str(job_id)


def cancel_run(job_id: str, ckpt_output_dir: Optional[Path]) -> list[str]:
    """Cancel a run and every job of its resubmit chain; none of them queues another. The ids cancelled."""
    return cancel_runs([(str(job_id), ckpt_output_dir)])


def cancel_runs(runs: list[tuple[str, Optional[Path]]], covered: frozenset = frozenset()) -> list[str]:
    """Cancel runs (first job id, ckpt_output_dir or None) and every job of their resubmit chains: each run is
    marked cancelled first (a node 0 about to resubmit reads the mark), then each chain is cancelled, and again
    after a moment (a successor queued meanwhile). `covered`: ids cancelled with another (an array's tasks).
    The ids cancelled."""
    for job_id, ckpt in runs:
        if ckpt is not None:
            record_cancelled(ckpt, job_id)
    done: list[str] = []
    for again in (False, True):
        if again and any(ckpt is not None for _, ckpt in runs):
            time.sleep(1.0)
        for job_id, ckpt in runs:
            for other in chain_of(ckpt, job_id) if ckpt is not None else [job_id]:
                if other not in done and other not in covered:
                    try:
                        client.cancel(other)
                    except SubmitError:
                        pass  # already gone
                    done.append(other)
    return done


def cancel_sweep(array_ids: list[str], tasks: list[tuple[str, Optional[Path]]]) -> list[str]:
    """Cancel a sweep's arrays, then its tasks as runs: a task that was resubmitted (no requeue at this site)
    goes on in jobs outside the arrays, and its node 0 must not queue another. The ids cancelled."""
    return cancel_runs([*((array_id, None) for array_id in array_ids), *tasks],
                       covered=frozenset(job_id for job_id, _ in tasks))


def node_log_name(job_id: str, node: int, stderr: bool = False) -> str:
    """One node's log file in the job folder (submitit's pattern: JOBID_TASK_log.out|err)."""
    return f"{job_id}_{node}_log.{'err' if stderr else 'out'}"


class SlurmJob:
    """A submitted training job. Logs: one stdout/stderr pair per node under `folder`."""

    def __init__(self, job_id: str, folder: Path, nodes: int, ckpt_output_dir: Optional[Path] = None) -> None:
        self.job_id, self._first_folder, self.nodes = str(job_id), Path(folder), nodes
        self.ckpt_output_dir = Path(ckpt_output_dir) if ckpt_output_dir else None
        self._preempted_since: Optional[float] = None
        self.requeue_allowed: Optional[bool] = None  # False: the site clears --requeue (a chain of jobs)

    @property
    def current_id(self) -> str:
        """The job now carrying the run: job_id, or the newest job of its resubmit chain."""
        return current_job(self.job_id, self.ckpt_output_dir)

    @property
    def folder(self) -> Path:
        """The current job's folder (job files and logs: one per job id)."""
        return self._first_folder.parent / self.current_id

    @classmethod
    def from_submitit(cls, job, plan) -> "SlurmJob":
        folder = Path(str(plan.folder / "%j").replace("%j", job.job_id))
        return cls(job.job_id, folder, plan.config.slurm.nodes, Path(plan.config.ckpt_output_dir))

    @property
    def state(self) -> str:
        """Slurm's state of the job now (UNKNOWN when Slurm cannot be asked)."""
        try:
            return client.slurm_state(self.current_id)["state"]
        except SubmitError:
            return "UNKNOWN"

    def log_paths(self, node: int = 0) -> tuple[Path, Path]:
        """(stdout, stderr) of one node's task."""
        current, folder = self.current_id, self.folder
        return folder / node_log_name(current, node), folder / node_log_name(current, node, True)

    @property
    def stdout_paths(self) -> list[Path]:
        return [self.log_paths(n)[0] for n in range(self.nodes)]

    def result_path(self, node: int) -> Path:
        """submitit's result file of one node's task (each attempt removes its own at start)."""
        return self.folder / f"{self.current_id}_{node}_result.pkl"

    def done(self) -> bool:
        """True once Slurm will run the job no more (finished, failed, cancelled, out of requeues)."""
        return self._ended(self.state)

    def _ended(self, state: str) -> bool:
        """The current job has ended and no newer job of its chain carries the run on."""
        current = self.current_id
        if self._ended_now(state):
            return self.current_id == current  # node 0 records a successor before its job ends
        return False

    def _ended_now(self, state: str) -> bool:
        if state != "PREEMPTED":
            self._preempted_since = None
            return state in ENDED
        self._preempted_since = self._preempted_since or time.monotonic()
        return time.monotonic() - self._preempted_since >= PREEMPTED_FOR_GOOD_S

    def wait(self, timeout_s: Optional[float] = None, poll_s: float = 2.0) -> TrainingResult:
        """Block until the job ends; its TrainingResult, or TrainingError saying why and naming the logs."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        state = self.state
        while not self._ended(state):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.job_id} still {state} after {timeout_s:.0f}s")
            time.sleep(poll_s)
            state = self.state
        return self._outcome(state)

    def _outcome(self, state: str) -> TrainingResult:
        """The ended job's result: node 0's TrainingResult of this attempt, when no node raised."""
        outcomes = [self._task_outcome(node) for node in range(self.nodes)]
        errors = [(node, detail) for node, (kind, detail) in enumerate(outcomes) if kind == "error"]
        kind, result = outcomes[0]
        if errors or kind != "success" or not isinstance(result, TrainingResult):
            raise TrainingError(self._failure(state, errors))
        if state != "COMPLETED":  # every task returned, then something ended one (e.g. a signal at exit)
            log.warning("job %s: training finished and node 0 verified %s, but Slurm records the job as %s",
                        self.job_id, result.checkpoint_path, state)
        return result

    def _task_outcome(self, node: int) -> tuple[str, object]:
        path = self.result_path(node)
        if not path.is_file():
            return ("missing", None)
        from submitit.core.utils import pickle_load

        try:
            return pickle_load(path)
        except Exception as exc:  # torn or unreadable: say so rather than guess
            return ("error", f"unreadable result file {path}: {exc}")

    def _failure(self, state: str, errors: list[tuple[int, object]]) -> str:
        current = self.current_id
        lines = [f"job {self.job_id} failed ({state})." if current == self.job_id else
                 f"job {self.job_id} failed: its chain's job {current} ended {state}."]
        record = read_status(self.ckpt_output_dir) if self.ckpt_output_dir else {}
        if record.get("stops"):
            stop = record["stops"][-1]
            lines.append(f"Last decision: {stop.get('action')} ({stop.get('reason')}).")
        for node, detail in errors:
            tail = [line for line in str(detail).strip().splitlines() if line.strip()][-1:]
            lines.append(f"Node {node}: {tail[0] if tail else 'error'}.")
        lines.append(f"Read the logs: {', '.join(map(str, self.log_paths(0)))}")
        return " ".join(lines)

    def cancel(self) -> None:
        cancel_run(self.job_id, self.ckpt_output_dir)

    def __repr__(self) -> str:
        return f"SlurmJob(job_id={self.job_id!r}, folder={str(self.folder)!r}, nodes={self.nodes})"
