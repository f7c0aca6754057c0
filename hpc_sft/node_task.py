"""NodeTask: the picklable callable run once per node: Slurm environment -> rendezvous -> data once -> backend."""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from . import datacache, registry
from .checkpoints import result_from_disk
from .errors import ConfigError
from .launch import Launch, finalize
from .result import TrainingResult
from .slurm_env import Rendezvous, SlurmEnv, rendezvous

log = logging.getLogger("hpc_sft.node")
PLAN_TAG = "HPC_SFT_NODE_PLAN"


def slurm_launch(config, rdzv: Rendezvous) -> Launch:
    """The launch for one node of an allocation (device and process count still unresolved)."""
    return Launch(nproc_per_node=config.nproc_per_node, nnodes=rdzv.nnodes, node_rank=rdzv.node_rank,
                  rdzv_id=rdzv.rdzv_id, rdzv_endpoint=rdzv.rdzv_endpoint, device=config.device or "auto",
                  process_data=False)


def plan_record(launch: Launch, host: str) -> dict:
    """What this node derived, as logged (and compared by tests with the login-side plan)."""
    return {"host": host, "nnodes": launch.nnodes, "node_rank": launch.node_rank, "rdzv_id": str(launch.rdzv_id),
            "rdzv_endpoint": launch.rdzv_endpoint, "nproc_per_node": launch.nproc_per_node, "device": launch.device}


def check_resolves(endpoint: str) -> None:
    """Fail loudly if node 0's host name does not resolve here (never fall back to localhost)."""
    host = endpoint.rsplit(":", 1)[0]
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise ConfigError("rdzv_endpoint", f"node 0's host {host!r} does not resolve on {socket.gethostname()} "
                          f"({exc})", "ask your admin to make node names resolvable between nodes") from None


def data_wait_s() -> float:
    return float(os.environ.get("HPC_SFT_DATA_WAIT_S", "7200"))


def prepare_data(config, backend, node_rank: int) -> Path:
    """Node 0 tokenizes once into a content-addressed cache; the others wait for it."""
    root = Path(config.data_output_dir or Path(config.ckpt_output_dir) / "data")
    path = datacache.cache_dir(root, datacache.cache_key(config, backend.version()))
    if node_rank == 0:
        return datacache.build(path, lambda out: backend.process_data(config, out))
    return datacache.wait(path, data_wait_s())


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")


@dataclass(frozen=True)
class NodeTask:
    """Runs one node's share of a multi-node training job inside a Slurm allocation."""

    config: object

    def __call__(self) -> Optional[TrainingResult]:
        setup_logging()
        env = SlurmEnv.from_environ()
        rdzv = rendezvous(env)
        check_resolves(rdzv.rdzv_endpoint)
        launch = finalize(slurm_launch(self.config, rdzv))
        print(PLAN_TAG, json.dumps(plan_record(launch, socket.gethostname())), flush=True)
        backend = registry.backend_class(self.config.backend)()
        data_dir = prepare_data(self.config, backend, rdzv.node_rank)
        backend.execute_training(replace(self.config, data_output_dir=str(data_dir)), launch)
        if rdzv.node_rank != 0:
            return None
        return result_from_disk(self.config.ckpt_output_dir, env.restart_count)
