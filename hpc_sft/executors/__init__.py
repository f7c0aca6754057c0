"""Executors say where a run happens: plan() is pure (drives --dry-run), submit() is the side effect."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..jobs import executor_of
from ..registry import EXECUTORS, load


def get(name: str):
    """An executor instance by name (the slurm one imports submitit only when used)."""
    return load(EXECUTORS[name].cls)()


def for_record(rec: dict):
    """The executor that wrote a job record: it answers state, cancel and log questions about that job, so no
    caller asks which executor it was."""
    return get(executor_of(rec))


@dataclass(frozen=True)
class JobState:
    """What an executor says about one recorded job: its state, whether it may still write, where its logs are,
    a headline for `hpc-sft status`, and executor-specific facts (`extra`, merged into the status)."""

    state: str
    live: bool
    headline: str
    logs: Optional[str]
    restarts: Optional[int] = None
    elapsed: str = ""
    extra: dict = field(default_factory=dict)

    def as_status(self) -> dict:
        return {"state": self.state, "restarts": self.restarts, "elapsed": self.elapsed, "logs": self.logs,
                "headline": self.headline, **self.extra}


def checks_for(name: str):
    """The pre-submit check function of an executor: `(plan, dry_run) -> Checks`; raises for what would fail."""
    return load(EXECUTORS[name].checks)


@dataclass(frozen=True)
class Checks:
    """What the pre-submit checks found: checks that ran, checks that could not run (and why), warnings."""

    ran: tuple[str, ...] = ()
    not_run: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()

    def __add__(self, other: "Checks") -> "Checks":
        return Checks(self.ran + other.ran, self.not_run + other.not_run, self.warnings + other.warnings)

    def once(self) -> "Checks":
        """The same checks with repeats dropped (a sweep runs some once per task or per array)."""
        return Checks(tuple(dict.fromkeys(self.ran)), tuple(dict.fromkeys(self.not_run)),
                      tuple(dict.fromkeys(self.warnings)))

    def lines(self) -> list[str]:
        """The dry run's account of the checks, one per line."""
        out = [f"# check ran: {name}" for name in self.ran]
        reasons = dict.fromkeys(why for _, why in self.not_run)
        for why in reasons:
            names = "; ".join(name for name, reason in self.not_run if reason == why)
            out.append(f"# check not run: {names} (because {why})")
        return out + [f"# warning: {text}" for text in self.warnings]
