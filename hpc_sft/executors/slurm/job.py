"""SlurmJob: the handle sft(executor='slurm') returns (job id, state, wait, cancel, log paths)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from ...errors import TrainingError
from ...result import TrainingResult


class SlurmJob:
    """A submitted training job. Logs: one stdout/stderr pair per node under `folder`."""

    def __init__(self, job, folder: Path, nodes: int) -> None:
        self._job, self.folder, self.nodes = job, Path(folder), nodes

    @classmethod
    def from_submitit(cls, job, plan) -> "SlurmJob":
        return cls(job, Path(str(plan.folder / "%j").replace("%j", job.job_id)), plan.config.slurm.nodes)

    @property
    def job_id(self) -> str:
        return self._job.job_id

    @property
    def state(self) -> str:
        return self._job.get_info(mode="force").get("State", "UNKNOWN") if self._job else "UNKNOWN"

    def log_paths(self, node: int = 0) -> tuple[Path, Path]:
        """(stdout, stderr) of one node's task."""
        return (self.folder / f"{self.job_id}_{node}_log.out", self.folder / f"{self.job_id}_{node}_log.err")

    @property
    def stdout_paths(self) -> list[Path]:
        return [self.log_paths(n)[0] for n in range(self.nodes)]

    def done(self) -> bool:
        return self._job.done(force_check=True)

    def wait(self, timeout_s: Optional[float] = None, poll_s: float = 2.0) -> TrainingResult:
        """Block until the job ends; its TrainingResult, or TrainingError naming the logs."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.done():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.job_id} still {self.state} after {timeout_s:.0f}s")
            time.sleep(poll_s)
        try:
            results = self._job.results()
        except Exception as exc:
            raise TrainingError(f"job {self.job_id} failed ({self.state}). Read the logs: "
                                f"{', '.join(map(str, self.log_paths(0)))}\n{exc}") from None
        return results[0]

    def cancel(self) -> None:
        self._job.cancel(check=False)

    def __repr__(self) -> str:
        return f"SlurmJob(job_id={self.job_id!r}, folder={str(self.folder)!r}, nodes={self.nodes})"
