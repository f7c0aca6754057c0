"""Requeue decisions, pure: (newest state facts, restarts, budget, earlier stops) -> finish | requeue | resubmit | give up.

The status record these decisions are written to lives in rundir.status."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import with_fix


@dataclass(frozen=True)
class StateFacts:
    """What the newest complete full state says."""

    epoch: int
    samples_seen: int
    global_step: Optional[int]  # set for mid-epoch (on-demand) saves


@dataclass(frozen=True)
class Decision:
    action: str  # "finish" | "requeue" | "resubmit" (the site forbids requeue: a new job continues) | "give_up"
    # | "stop" (executor='srun': nobody requeues a step; or a chain the user cancelled)
    reason: str
    why: str = ""  # what stopped the run (the reason's first part), for a decision that is taken further
    samples: int = 0  # samples seen by the newest complete state


def resubmit_reason(why: str, samples: int, successor: str = "a new job") -> str:
    """Why a run goes on in another job: the site clears --requeue."""
    return f"{why}; this job cannot be requeued (the site clears --requeue): {successor} resumes from {samples} samples"


def finished(state: Optional[StateFacts], num_epochs: int) -> bool:
    """Training is complete when the newest state is the last epoch's end-of-epoch save."""
    return state is not None and state.global_step is None and state.epoch >= num_epochs - 1


def decide_in_step(state: Optional[StateFacts], num_epochs: int, why: str) -> Decision:
    """executor='srun': finish, or stop with the state saved (the user runs the same command again)."""
    if finished(state, num_epochs):
        return Decision("finish", "training complete")
    return Decision("stop", f"{why}; stopped at {state.samples_seen if state else 0} samples with the state "
                            "saved: run the same command again (inside an allocation) to resume from there")


def decide(state: Optional[StateFacts], num_epochs: int, restarts: int, max_requeues: int,
           stops: list[dict], why: str, can_requeue: bool = True) -> Decision:
    """finish, requeue (resubmit where the job cannot be requeued) or give up, from facts on disk, the restart
    count (requeues and earlier jobs of a resubmit chain) and earlier stops of this run."""
    if finished(state, num_epochs):
        return Decision("finish", "training complete")
    samples = state.samples_seen if state else 0
    if restarts >= max_requeues:
        return Decision("give_up", with_fix(f"{why}; requeue budget max_requeues={max_requeues} is used up "
                                            f"({samples} samples seen)", "raise slurm.max_requeues or the time limit"))
    earlier = [s.get("samples_seen") or 0 for s in stops]
    if len(earlier) >= 2 and samples <= earlier[-1] <= earlier[-2]:
        return Decision("give_up", with_fix(f"{why}; no progress in the last two runs (stuck at {samples} samples)",
                                            "make the time limit longer than startup + one checkpoint"))
    if not can_requeue:
        return Decision("resubmit", resubmit_reason(why, samples), why, samples)
    return Decision("requeue", f"{why}; requeueing to resume from {samples} samples")
