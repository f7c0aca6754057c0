"""SlurmEnv: what a task inside an allocation knows (read from SLURM_*), and the rendezvous derived from it."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Mapping, MutableMapping, Optional

from ...errors import ConfigError
from .nodelist import expand_nodelist

PORT_BASE, PORT_SPAN = 20000, 12000  # below Linux's ephemeral range (32768+)
KEPT_VARS = frozenset({"SLURM_CONF"})  # which cluster to talk to: the submitter's choice, not an outer job's


def outer_job_vars(env: Mapping[str, str]) -> list[str]:
    """The SLURM_* / SLURMD_* variables an enclosing job or step set (all but SLURM_CONF). Pure."""
    return sorted(k for k in env if k.startswith(("SLURM_", "SLURMD_")) and k not in KEPT_VARS)


@contextlib.contextmanager
def without_outer_job(env: Optional[MutableMapping[str, str]] = None) -> Iterator[None]:
    """While submitting from inside a job (salloc, a batch script, a notebook on a compute node): hide that job's
    SLURM_* variables, which sbatch would otherwise pass into the new job (srun there honours e.g. an outer
    SLURM_CPUS_PER_TASK or SLURM_MEM_PER_CPU); they come back afterwards."""
    env = os.environ if env is None else env
    saved = {key: env.pop(key) for key in outer_job_vars(env)}
    try:
        yield
    finally:
        env.update(saved)


@dataclass(frozen=True)
class SlurmEnv:
    """The allocation as one task sees it."""

    job_id: str
    nodelist: str
    nnodes: int
    node_rank: int
    restart_count: int = 0
    hostname: Optional[str] = None
    cpus_on_node: Optional[int] = None  # CPUs the job was given on this node
    step_id: Optional[str] = None  # the job step the task runs in (executor='srun' runs several per job)

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> "SlurmEnv":
        env = os.environ if env is None else env
        job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
        if not job_id:
            raise ConfigError("SLURM_JOB_ID", "is not set: this is not running inside a Slurm job",
                              "use executor='local' outside Slurm, or submit with executor='slurm'")
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
        return cls(job_id=job_id, nodelist=nodelist,
                   nnodes=_int(env, "SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES")),
                   node_rank=_int(env, "SLURM_NODEID"),
                   restart_count=int(env.get("SLURM_RESTART_COUNT") or 0),
                   hostname=env.get("SLURMD_NODENAME"),
                   cpus_on_node=int(env["SLURM_CPUS_ON_NODE"]) if env.get("SLURM_CPUS_ON_NODE", "").isdigit()
                   else None, step_id=env.get("SLURM_STEP_ID") or None)

    @property
    def attempt(self) -> str:
        """JOBID.RESTART[.STEP]: one run of the job (a requeue keeps the id, and so does a second step of
        executor='srun' in one allocation); names the files of that run."""
        return f"{self.job_id}.{self.restart_count}" + (f".{self.step_id}" if self.step_id else "")

    @property
    def hostnames(self) -> list[str]:
        hosts = expand_nodelist(self.nodelist)
        if len(hosts) != self.nnodes:
            raise ConfigError("SLURM_JOB_NODELIST", f"{self.nodelist!r} names {len(hosts)} hosts but "
                              f"SLURM_JOB_NUM_NODES is {self.nnodes}", "report this allocation to your admin")
        return hosts


def _int(env: Mapping[str, str], key: str, fallback: Optional[str] = None) -> int:
    raw = env.get(key, fallback)
    if raw is None or not str(raw).isdigit():
        raise ConfigError(key, f"is {raw!r}, not a number", "run inside a Slurm job step (srun)")
    return int(raw)


def rendezvous_port(job_id: str) -> int:
    """A port from the job id: the same on every node and after requeue, different for nearby job ids."""
    digits = "".join(ch for ch in str(job_id) if ch.isdigit())
    if not digits:
        raise ConfigError("SLURM_JOB_ID", f"{job_id!r} has no digits", "report this to your admin")
    return PORT_BASE + int(digits) % PORT_SPAN


@dataclass(frozen=True)
class Rendezvous:
    """torchrun's multi-node arguments for one node."""

    nnodes: int
    node_rank: int
    rdzv_id: str
    rdzv_endpoint: str


def rendezvous(env: SlurmEnv) -> Rendezvous:
    """nnodes, node_rank, rdzv_id = job id, endpoint = first host : port from the job id."""
    hosts = env.hostnames
    if not 0 <= env.node_rank < env.nnodes:
        raise ConfigError("SLURM_NODEID", f"{env.node_rank} is outside 0..{env.nnodes - 1}",
                          "run one task per node (--ntasks-per-node=1)")
    return Rendezvous(env.nnodes, env.node_rank, env.job_id, f"{hosts[0]}:{rendezvous_port(env.job_id)}")
