"""Launch: how the training processes start on one node (torchrun shape, device, extra environment)."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

from . import container as containers
from .container import Container

WORKER_DIR = Path(__file__).resolve().parent / "_worker"  # the shim: signal shield, ILT patches
RESOLVER = WORKER_DIR / "hpc_sft_exec.py"  # inside an image: a host package script found again by module name
log = logging.getLogger("hpc_sft.container")


@dataclass(frozen=True)
class Launch:
    """Per-node process layout handed to a backend. `env` is added to the training environment."""

    nproc_per_node: Union[int, str, None]  # None: decided on the node by device (see finalize)
    nnodes: int = 1
    node_rank: int = 0
    rdzv_id: Union[int, str] = "hpc-sft"
    rdzv_endpoint: Optional[str] = None
    master_addr: Optional[str] = None
    master_port: Optional[int] = None
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    env: tuple[tuple[str, str], ...] = ()
    process_data: bool = True
    on_demand_checkpointing: bool = False
    container: Optional[Container] = None  # slurm.container with the training mounts (launch_container)

    def __post_init__(self) -> None:
        if isinstance(self.container, Mapping):  # read back from JSON (the trl launch file)
            object.__setattr__(self, "container", Container.from_value(self.container))


def path_with_venv(path: Optional[str]) -> str:
    """PATH with this interpreter's bin/ first, so launchers find the same environment's torchrun."""
    return os.pathsep.join(filter(None, [os.path.dirname(sys.executable), path]))


def worker_env(launch: Launch, *pythonpath: str) -> dict[str, str]:
    """Environment changes for torchrun and its workers, whichever backend starts them: this venv's
    torchrun, the worker shim (then `pythonpath`) first on PYTHONPATH, USR1/USR2 ignored there so that
    only the training parent reacts to Slurm's warning, and CPU mode for accelerate."""
    env = dict(launch.env)
    env["PATH"] = path_with_venv(os.environ.get("PATH"))
    paths = [str(WORKER_DIR), *pythonpath, os.environ.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    env["HPC_SFT_SHIELD_SIGNALS"] = "USR1,USR2"
    env["HPC_SFT_RANK_PREFIX"] = "1"  # each worker line starts with [rankR] (node logs, `hpc-sft logs --all`)
    env["HPC_SFT_HF_KEYS"] = "1"  # instructlab-training workers: hf_format checkpoints without DDP's module.
    if launch.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"  # without it, >1 process on CPU does not synchronise gradients
    if launch.container is not None:  # spawn_shielded starts the command inside the image
        env[containers.ENV_KEY] = json.dumps({**asdict(launch.container), "gpu": launch.device == "cuda"})
    return env


def launch_container(config) -> Optional[Container]:
    """config.slurm.container with the paths training uses mounted at the same path (None: no container)."""
    wanted = getattr(getattr(config, "slurm", None), "container", None)
    if wanted is None:
        return None
    mounts = containers.training_mounts(config, str(WORKER_DIR))
    for path in mounts:
        if "," in path or ":" in path:  # both runtimes split their mount lists there
            from .errors import ConfigError

            raise ConfigError("slurm.container", f"{path!r} must be mounted into the image, but a path with ',' "
                              "or ':' cannot be", "rename it, or train without a container")
    return replace(wanted, mounts=tuple(dict.fromkeys([*mounts, *wanted.mounts])))


def in_container(command: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The one place a container is applied: `command` as the image runs it (see hpc_sft/container.py)."""
    spec = json.loads(env[containers.ENV_KEY])
    gpu = bool(spec.pop("gpu", False))
    wanted = Container.from_value(spec)
    host = containers.Host.here(str(RESOLVER))
    argv, outer_env = containers.wrap(wanted, command, env, (), host, gpu=gpu)
    log.info("in container: %s", containers.shown(argv))
    return argv, outer_env


def shielded_signals(env: dict[str, str]) -> set[signal.Signals]:
    """The signals HPC_SFT_SHIELD_SIGNALS in `env` makes the shimmed processes ignore."""
    names = (part.strip().upper() for part in env.get("HPC_SFT_SHIELD_SIGNALS", "").split(","))
    found = (getattr(signal, n if n.startswith("SIG") else f"SIG{n}", None) for n in names if n)
    return {sig for sig in found if isinstance(sig, signal.Signals)}


def spawn_shielded(command: list[str], env: dict[str, str], **popen_kw) -> subprocess.Popen:
    """Popen with the shielded signals blocked from fork until the child's shim ignores (then unblocks) them:
    a warning sent to the whole step just after the fork would otherwise kill torchrun before its Python
    started (default action of USR1/USR2). Here they wait, pending, for this process's own handler."""
    if containers.ENV_KEY in env:
        command, env = in_container(list(command), env)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, shielded_signals(env))
    try:
        return subprocess.Popen(command, env=env, **popen_kw)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def resolve_device(device: Optional[str]) -> str:
    """None/'auto' -> 'cuda' when a GPU is visible here, else 'cpu' (imports torch: compute side only)."""
    if device not in (None, "auto"):
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_nproc(nproc: Union[int, str, None], device: str) -> Union[int, str]:
    """One process per GPU by default; one process on CPU unless set."""
    if nproc is not None:
        return nproc
    return "gpu" if device == "cuda" else 1


def local_launch(config) -> Launch:
    """The launch for executor='local': this machine, or the node the user describes by hand."""
    kw = config.backend_kwargs
    return Launch(
        nproc_per_node=config.nproc_per_node,
        nnodes=config.nnodes or 1,
        node_rank=config.node_rank or 0,
        rdzv_id=config.rdzv_id if config.rdzv_id is not None else "hpc-sft-local",
        rdzv_endpoint=config.rdzv_endpoint,
        master_addr=kw.get("master_addr"),
        master_port=kw.get("master_port"),
        device=config.device or "auto",
    )


def finalize(launch: Launch) -> Launch:
    """Resolve device and process count on the node that will train."""
    device = resolve_device(launch.device)
    return replace(launch, device=device, nproc_per_node=default_nproc(launch.nproc_per_node, device))


def data_step(config, backend) -> Callable[[str], None]:
    """How node 0 tokenizes into a folder: in this process, or (slurm.container) inside the image through
    `python3 -m hpc_sft.in_image process-data`, started like the training processes (shielded, same mounts)."""
    wanted = launch_container(config)
    if wanted is None:
        return lambda out: backend.process_data(config, out)

    def run(out: str) -> None:
        from .errors import TrainingError
        from .serialize import to_dict

        launch = Launch(nproc_per_node=1, device="cpu" if config.device == "cpu" else "auto", container=wanted)
        command = [sys.executable, "-u", "-m", "hpc_sft.in_image", "process-data", out,
                   json.dumps(to_dict(config), default=str)]
        code = spawn_shielded(command, {**os.environ, **worker_env(launch)}).wait()
        if code != 0:
            raise TrainingError(f"tokenizing the data inside the container image {wanted.image} failed (exit "
                                f"{code}); the lines above in this node's log say why")
    return run
