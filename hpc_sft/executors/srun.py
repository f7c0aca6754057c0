"""executor='srun': train now inside the current allocation (salloc, or a user's own batch script) as one job
step running the node task of a submitted job; an interrupted step saves and stops, and running again resumes."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Optional

from ..errors import ConfigError, Interrupted, TrainingError
from ..rundir import lock as ckpt_lock
from ..rundir.layout import result_from_disk
from ..rundir.status import read_status
from ..serialize import to_dict
from ..signals import handled
from . import Checks
from .slurm.executor import job_folder

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
NO_ALLOCATION_FIX = ('run it inside an allocation (salloc -N2 ..., then the same command; or in your sbatch '
                     'script), or use executor = "slurm" to submit a job')


@dataclass(frozen=True)
class Allocation:
    """The allocation this process runs in, from its SLURM_* environment."""

    job_id: str
    nodes: int
    nodelist: str


def allocation(env: Mapping[str, str]) -> Allocation:
    """The enclosing allocation; ConfigError (naming the fix) outside one. Pure."""
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job_id:
        raise ConfigError("executor", "is 'srun', but this shell is not inside a Slurm allocation (SLURM_JOB_ID "
                          "is not set)", NO_ALLOCATION_FIX)
    if env.get("SLURM_STEP_ID") not in (None, "", "batch", "extern", "interactive"):
        raise ConfigError("executor", f"is 'srun', but this already runs inside job step "
                          f"{job_id}.{env['SLURM_STEP_ID']}: a step cannot start the training step",
                          "run the command in the allocation's own shell or batch script, not under srun")
    nodes = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or ""
    if not nodes.isdigit():
        raise ConfigError("SLURM_JOB_NUM_NODES", f"is {nodes!r}, not a node count", NO_ALLOCATION_FIX)
    return Allocation(job_id, int(nodes), env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "")


@dataclass(frozen=True)
class SrunPlan:
    """One job step over every node of the allocation, one node task per node; nothing here runs."""

    config: object
    alloc: Allocation
    folder: Path

    def config_file(self) -> Path:
        return self.folder / f"srun_{self.alloc.job_id}_config.json"

    def command(self) -> list[str]:
        n, logs = self.alloc.nodes, self.folder / "srun_%j.%s_%t"
        return ["srun", f"--nodes={n}", f"--ntasks={n}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                f"--output={logs}.out", f"--error={logs}.err", sys.executable, "-u", "-m",
                "hpc_sft.executors.slurm.node_main", "--in-allocation", str(self.config_file())]

    def describe(self) -> str:
        return "\n".join([f"# job step in allocation {self.alloc.job_id} ({self.alloc.nodes} node(s): "
                          f"{self.alloc.nodelist}); one node task per node, as in a submitted job",
                          " ".join(shlex.quote(part) for part in self.command())])


def srun_checks(plan: SrunPlan, dry_run: bool = False) -> Checks:
    return Checks(ran=(f"inside allocation {plan.alloc.job_id} ({plan.alloc.nodes} node(s))",))


class SrunExecutor:
    name = "srun"

    def plan(self, config) -> SrunPlan:
        alloc = allocation(os.environ)
        config = replace(config, slurm=replace(config.slurm, nodes=alloc.nodes))  # the world: every node
        return SrunPlan(config, alloc, job_folder(config))

    def submit(self, plan: SrunPlan, backend) -> object:
        """Run the step to its end: the TrainingResult, or Interrupted (saved; run again to resume)."""
        backend.check_values(plan.config)
        ckpt = Path(plan.config.ckpt_output_dir).resolve()
        ckpt_lock.check_free(ckpt, plan.alloc.job_id)  # an earlier step of this allocation that died: take over
        plan.folder.mkdir(parents=True, exist_ok=True)
        plan.config_file().write_text(json.dumps(to_dict(plan.config)))
        before = len(read_status(ckpt).get("stops", []))
        code, forwarded = run_step(plan.command())
        return outcome(plan, code, forwarded, before)


def run_step(command: list[str]) -> tuple[int, Optional[str]]:
    """srun in its own process group (Ctrl-C reaches only us; srun alone would need it twice); a stop signal
    we get is passed on as USR2, which srun forwards to every node task: they save and stop."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    got: list[str] = []

    def forward(signum, _frame) -> None:
        got.append(signal.Signals(signum).name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR2)

    with handled(FORWARDED, forward):
        return proc.wait(), (got[0] if got else None)


def outcome(plan: SrunPlan, code: int, forwarded: Optional[str], before: int):
    """What the step's node 0 recorded (the stops after the `before` earlier ones) decides: finished, stopped
    with its state saved, or failed."""
    ckpt = Path(plan.config.ckpt_output_dir)
    stops = read_status(ckpt).get("stops", [])[before:]
    last = stops[-1] if stops else {}
    if last.get("action") == "finish" and code == 0:
        return result_from_disk(ckpt)
    logs = plan.folder / f"srun_{plan.alloc.job_id}.*_0.out"
    if last.get("action") == "stop":
        raise Interrupted(forwarded or "SIGUSR2", f"{last['reason']} (logs: {logs})")
    why = last.get("reason") or f"srun exited with {code}"
    raise TrainingError(f"training in allocation {plan.alloc.job_id} failed: {why}. Read the logs: {logs} (and .err)")
