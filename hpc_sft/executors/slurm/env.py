"""SlurmEnv: what a task inside an allocation knows (read from SLURM_*), and the rendezvous derived from it."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from ...errors import ConfigError
from .nodelist import expand_nodelist

PORT_BASE, PORT_SPAN = 20000, 12000  # below Linux's ephemeral range (32768+)


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
                   else None)

    @property
    def attempt(self) -> str:
        """JOBID.RESTART: one run of the job (a requeue keeps the id); names the files of that run."""
        return f"{self.job_id}.{self.restart_count}"

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
