"""Multi-process runs of the trl backend: torchrun per node, workers shielded from Slurm's warning signal,
which the node's training parent turns into a stop file every worker polls."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from ... import signals
from ...errors import TrainingError
from ...launch import Launch, spawn_shielded, worker_env
from ...rundir.layout import node_log, trl_launch_file, trl_stop_file
from .train import STOP_FILE_ENV

log = logging.getLogger("hpc_sft.trl")
WORKER = Path(__file__).resolve().parent / "worker.py"
POLL_S = 0.2


def launch_file(config, launch) -> Path:
    """Write the worker's arguments (config + launch) as JSON; return the path."""
    from ...serialize import to_dict

    path = Path(config.ckpt_output_dir) / trl_launch_file(launch.node_rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": to_dict(config), "launch": dataclasses.asdict(launch)}, default=str))
    return path


def read_launch_file(path) -> tuple[Any, Launch]:
    from ...serialize import from_dict

    data = json.loads(Path(path).read_text())
    launch = data["launch"]
    launch["env"] = tuple(tuple(pair) for pair in launch.get("env", ()))
    return from_dict(data["config"]), Launch(**launch)


def torchrun_command(launch, args_file) -> list[str]:
    """The torchrun command line for one node. Pure."""
    cmd = ["torchrun", f"--nproc-per-node={launch.nproc_per_node}", f"--nnodes={launch.nnodes}",
           f"--node-rank={launch.node_rank}", f"--rdzv-id={launch.rdzv_id}"]
    if launch.rdzv_endpoint:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={launch.rdzv_endpoint}"]
    elif launch.master_addr:
        cmd += [f"--master-addr={launch.master_addr}", f"--master-port={launch.master_port or 29500}",
                "--rdzv-backend=static"]
    else:
        cmd += ["--standalone"]
    return cmd + [str(WORKER), str(args_file)]


def stop_file(config, launch) -> Path:
    """Unique to the run and the node (never shared between nodes or jobs)."""
    return Path(config.ckpt_output_dir) / trl_stop_file(launch.rdzv_id, launch.node_rank)


def trl_worker_env(launch, stop: Path) -> dict[str, str]:
    """The full environment for torchrun: hpc_sft importable by worker.py, and the stop file to poll."""
    package_root = str(Path(__file__).resolve().parents[3])  # the folder holding hpc_sft/
    return {**os.environ, **worker_env(launch, package_root), STOP_FILE_ENV: str(stop)}


def wait_forwarding_stop(proc: subprocess.Popen, stop: Path) -> int:
    """Wait for torchrun; once this process caught a warning signal, create the stop file (once)."""
    while proc.poll() is None:
        if signals.received() is not None and not stop.exists():
            stop.write_text(signals.received().name)
        time.sleep(POLL_S)
    return proc.returncode


def stopped_by_signal(code: int) -> bool:
    """torchrun (or its workers) died of a signal after this node was asked to stop: Slurm ending the step
    at the end of a preemption's grace time, or a requeue. Not a failure: the newest complete checkpoint
    (marked only after every rank saved) decides whether to requeue, and the no-progress guard bounds it."""
    return signals.received() is not None and (code < 0 or code > 128)


def run_torchrun(config, launch) -> None:
    args_file = launch_file(config, launch)
    logfile = Path(config.ckpt_output_dir) / node_log(launch.node_rank)
    stop = stop_file(config, launch)
    stop.unlink(missing_ok=True)  # a requeued job keeps its id: never inherit the last run's request
    with open(logfile, "a") as out:
        try:
            proc = spawn_shielded(torchrun_command(launch, args_file), trl_worker_env(launch, stop),
                                  stdout=out, stderr=subprocess.STDOUT)
        except FileNotFoundError as exc:
            raise TrainingError(f"trl backend: torchrun not found ({exc}); install torch in this "
                                "environment") from exc
        code = wait_forwarding_stop(proc, stop)
    stop.unlink(missing_ok=True)
    if code != 0 and stopped_by_signal(code):
        log.warning("trl torchrun on node %s ended by signal %s after the stop request (%s); the "
                    "checkpoints on disk decide what happens next", launch.node_rank, -code if code < 0 else
                    code - 128, signals.received().name)
        return
    if code != 0:
        tail = logfile.read_text(errors="replace")[-2000:]
        raise TrainingError(f"trl torchrun workers failed on node {launch.node_rank} (exit {code}). "
                            f"Read the log: {logfile}\n{tail}")
