"""Executors say where a run happens: plan() is pure (drives --dry-run), submit() is the side effect."""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import load

EXECUTORS = {"local": "hpc_sft.executors.local:LocalExecutor",
             "slurm": "hpc_sft.executors.slurm.executor:SlurmExecutor"}
# executor -> its pre-submit checks, `(plan, dry_run) -> Checks` (the local executor's live in the pipeline)
CHECKS = {"local": "hpc_sft.pipeline:local_checks",
          "slurm": "hpc_sft.executors.slurm.executor:preflight"}


def get(name: str):
    """An executor instance by name (the slurm one imports submitit only when used)."""
    return load(EXECUTORS[name])()


def checks_for(name: str):
    """The pre-submit check function of an executor: `(plan, dry_run) -> Checks`; raises for what would fail."""
    return load(CHECKS[name])


@dataclass(frozen=True)
class Checks:
    """What the pre-submit checks found: checks that ran, checks that could not run (and why), warnings."""

    ran: tuple[str, ...] = ()
    not_run: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()

    def __add__(self, other: "Checks") -> "Checks":
        return Checks(self.ran + other.ran, self.not_run + other.not_run, self.warnings + other.warnings)

    def lines(self) -> list[str]:
        """The dry run's account of the checks, one per line."""
        out = [f"# check ran: {name}" for name in self.ran]
        reasons = dict.fromkeys(why for _, why in self.not_run)
        for why in reasons:
            names = "; ".join(name for name, reason in self.not_run if reason == why)
            out.append(f"# check not run: {names} (because {why})")
        return out + [f"# warning: {text}" for text in self.warnings]
