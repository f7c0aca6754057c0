"""Containers (`slurm.container`): training runs inside an image, everything that talks to Slurm stays on the host.

The node task (scontrol requeue, status records, the hang watchdog) runs on the host; the processes it starts
for training (torchrun and its workers, node 0's tokenization) go through the runtime:

- apptainer: ``apptainer exec --cleanenv [--nv] --bind SRC:DST ... --env NAME=VALUE ... IMAGE CMD...``
- pyxis: a job step on the node task's own node, ``srun --overlap --nodes=1 --ntasks=1 -w HOST
  --container-image=IMAGE --container-mounts=SRC:DST,... --container-env=NAME,... CMD...`` (the values travel
  in srun's environment; --container-env makes them win over the image's own).

`wrap` is pure: (container, command, environment, host facts) -> (argv, environment for that argv). The host's
paths mean nothing inside the image, so: the host interpreter becomes the image's `python3`; a script of the
host's Python packages (instructlab-training's main_ds.py, the trl worker) is found again inside the image by its
module name (`python3 RESOLVER`, which also lets the worker shim see the script path it expects); PATH is the
image's; PYTHONPATH keeps only the entries visible inside (the worker shim, bind-mounted at the same path).
"""
from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .errors import ConfigError, table_of

RUNTIMES = ("apptainer", "pyxis")
ENV_KEY = "HPC_SFT_CONTAINER"  # the launch's container, as JSON, from worker_env to spawn_shielded
#: `slurm.container` keys and what they mean (docs/recipe.md is generated from this table)
KEYS = {
    "runtime": '"apptainer" (apptainer exec) or "pyxis" (srun --container-image, enroot)',
    "image": "the image: a .sif file or any apptainer URI (docker://...); for pyxis a squashfs file or an "
             "enroot URI. It must hold python3, torch (torchrun), the backend and hpc-sft at the submitting "
             "versions (docs/containers.md)",
    "mounts": 'more bind mounts, each "SRC" (same path inside) or "SRC:DST"; absolute paths. ckpt_output_dir, '
              "data_path, model_path, data_output_dir, the worker shim and /dev/shm are mounted automatically",
    "env": 'environment set inside the image, e.g. { HF_HOME = "/shared/hf" }; wins over everything else',
}
#: host variables passed into the image by name (besides what the launch sets and `env`)
PASS_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TOKENIZERS_", "HPC_SFT_", "CUDA_", "NCCL_", "NVIDIA_",
                 "OMP_", "MKL_", "TORCH", "PYTORCH_", "ACCELERATE_", "PET_", "WANDB_", "MLFLOW_", "LC_")
PASS_NAMES = frozenset({"MASTER_ADDR", "MASTER_PORT", "TRUST_REMOTE_CODE", "CHECKPOINT_TRIGGER_FILENAME", "LANG",
                        "TZ"})
#: host variables never passed: they name host paths or the host's interpreter
HOST_ONLY = frozenset({"PATH", "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP",
                       "PYTHONEXECUTABLE", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_EXE", "CONDA_PYTHON_EXE",
                       ENV_KEY})
ALWAYS_MOUNTED = ("/dev/shm",)  # the training parent's trigger files reach the workers through it
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Container:
    """`slurm.container`: validated and frozen. `mounts`: "SRC" or "SRC:DST"; `env`: (NAME, VALUE) pairs."""

    runtime: str
    image: str
    mounts: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_value(cls, value: Any) -> "Container":
        """A Container, or a mapping of its keys (a recipe's [slurm.container] table); ConfigError naming the key."""
        if isinstance(value, cls):
            value = asdict(value)
        table_of("slurm.container", value, KEYS, "container key",
                 'use [slurm.container] with runtime = "apptainer" and image = "/path/image.sif"')
        runtime = value.get("runtime")
        if runtime not in RUNTIMES:
            raise ConfigError("slurm.container.runtime", f"must be one of {', '.join(map(repr, RUNTIMES))}, got "
                              f"{runtime!r}", 'set runtime = "apptainer" or runtime = "pyxis"')
        image = value.get("image")
        if not isinstance(image, str) or not image.strip() or not image.isprintable():
            raise ConfigError("slurm.container.image", f"is required: a one-line image path or URI, got {image!r}",
                              'set image = "/shared/images/sft.sif"')
        return cls(runtime, image, _mounts(value.get("mounts", ())), _env(value.get("env", ())))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Container":
        data = json.loads(text)
        return cls(data["runtime"], data["image"], tuple(data["mounts"]), tuple(map(tuple, data["env"])))


def _mounts(mounts: Any) -> tuple[str, ...]:
    if isinstance(mounts, str) or not isinstance(mounts, (list, tuple)):
        raise ConfigError("slurm.container.mounts", f"must be a list of paths, got {mounts!r}",
                          'use mounts = ["/shared", "/scratch/data:/data"]')
    for mount in mounts:
        parts = mount.split(":") if isinstance(mount, str) else []
        if (not 1 <= len(parts) <= 2 or not all(p.startswith("/") for p in parts) or "," in mount
                or not mount.isprintable()):
            raise ConfigError("slurm.container.mounts", f"{mount!r} is not \"SRC\" or \"SRC:DST\" with absolute "
                              "paths (no commas)", 'use mounts = ["/shared", "/scratch/data:/data"]')
    return tuple(mounts)


def _env(env: Any) -> tuple[tuple[str, str], ...]:
    pairs = list(env.items()) if isinstance(env, Mapping) else env
    if not isinstance(pairs, (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        raise ConfigError("slurm.container.env", f"must be a table of NAME = \"value\", got {env!r}",
                          'use env = { HF_HOME = "/shared/hf" }')
    for name, value in pairs:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in HOST_ONLY:
            raise ConfigError(f"slurm.container.env.{name}", "is not a variable name that can be set inside the "
                              f"image ({', '.join(sorted(HOST_ONLY - {ENV_KEY}))} are the image's or the host's)",
                              "use letters, digits and underscores; set the image's PATH in the image itself")
        if not isinstance(value, str) or not value.isprintable():
            raise ConfigError(f"slurm.container.env.{name}", f"must be a one-line string, got {value!r}",
                              f'set {name} = "..."')
    return tuple((name, value) for name, value in pairs)


def split_mount(mount: str) -> tuple[str, str]:
    src, _, dst = mount.partition(":")
    return src, dst or src


@dataclass(frozen=True)
class Host:
    """What the wrapper needs to know about the host side (passed in, so that `wrap` stays pure)."""

    executable: str  # sys.executable: becomes the image's python3
    import_roots: tuple[str, ...] = ()  # sys.path: a script under one of them is found again by its module name
    hostname: str = "localhost"  # pyxis: the step runs on this node
    resolver: str = ""  # the in-image resolver script (in the mounted worker shim)
    base_env: Mapping[str, str] = field(default_factory=dict)  # the node task's own environment (os.environ)

    @classmethod
    def here(cls, resolver: str) -> "Host":
        import socket
        import sys

        return cls(sys.executable, tuple(p for p in sys.path if p), socket.gethostname(), resolver, dict(os.environ))


def under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def script_module(path: str, roots: Sequence[str]) -> Optional[str]:
    """instructlab/training/main_ds.py under a host import root -> 'instructlab.training.main_ds'."""
    if not path.endswith(".py") or not path.startswith("/"):
        return None
    best = max((r for r in roots if r.startswith("/") and under(path, [r])), key=len, default=None)
    if best is None:
        return None
    rel = path[len(best.rstrip("/")) + 1:-3]
    parts = rel.split("/")
    return ".".join(parts) if all(NAME_RE.fullmatch(p) for p in parts) else None


def inner_command(command: Sequence[str], visible: Sequence[str], host: Host) -> list[str]:
    """The command as the image must run it: the host interpreter -> python3, host venv tools -> their name on
    the image's PATH, a host package script -> resolved by module name inside (through the resolver)."""
    argv = list(command)
    bin_dir = os.path.dirname(host.executable)
    if argv and (argv[0] == host.executable or (under(argv[0], [bin_dir]) and not under(argv[0], visible))):
        argv[0] = "python3" if argv[0] == host.executable else os.path.basename(argv[0])
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith("-") or under(arg, visible):
            continue
        module = script_module(arg, host.import_roots)
        if module is not None:  # the first positional script only
            return ["python3", host.resolver, str(i), module, *argv]
        if arg.endswith(".py"):
            break
    return argv


def pythonpath_inside(value: str, visible: Sequence[str]) -> str:
    return os.pathsep.join(p for p in value.split(os.pathsep) if p and under(p, visible))


def passed_env(env: Mapping[str, str], container: Container, visible: Sequence[str],
               base: Mapping[str, str]) -> dict[str, str]:
    """The variables the processes inside the image get: what the launch set or changed, the host's training
    variables (PASS_PREFIXES, PASS_NAMES), then the recipe's `env`. Never PATH and the other host-only ones."""
    out = {}
    for name, value in env.items():
        if name in HOST_ONLY:
            continue
        if base.get(name) == value and not (name.startswith(PASS_PREFIXES) or name in PASS_NAMES):
            continue
        out[name] = value
    if "PYTHONPATH" in out:
        out["PYTHONPATH"] = pythonpath_inside(out["PYTHONPATH"], visible)
        if not out["PYTHONPATH"]:
            del out["PYTHONPATH"]
    out.update(container.env)
    return dict(sorted(out.items()))


def apptainer_env_arg(name: str, value: str) -> str:
    """apptainer's --env is read as CSV: a value with a comma or a quote must be one quoted field."""
    item = f"{name}={value}"
    return '"' + item.replace('"', '""') + '"' if any(c in item for c in ',"\n') else item


def wrap(container: Container, command: Sequence[str], env: Mapping[str, str], mounts: Sequence[str],
         host: Host, gpu: bool = False) -> tuple[list[str], dict[str, str]]:
    """(argv, environment for argv) that runs `command` inside the image with `mounts` (container.mounts too)
    and the variables of passed_env. Pure."""
    all_mounts = list(dict.fromkeys([*ALWAYS_MOUNTED, *mounts, *container.mounts]))
    visible = [split_mount(m)[1] for m in all_mounts]
    inner = inner_command(command, visible, host)
    inside = passed_env(env, container, visible, host.base_env)
    if container.runtime == "apptainer":
        argv = ["apptainer", "exec", "--cleanenv", *(["--nv"] if gpu else [])]
        for mount in all_mounts:
            argv += ["--bind", ":".join(split_mount(mount))]
        for name, value in inside.items():
            argv += ["--env", apptainer_env_arg(name, value)]
        return argv + [container.image, *inner], {k: v for k, v in env.items() if k != ENV_KEY}
    argv = ["srun", "--overlap", "--nodes=1", "--ntasks=1", "-w", host.hostname, "--kill-on-bad-exit=1",
            f"--container-image={container.image}",
            "--container-mounts=" + ",".join(":".join(split_mount(m)) for m in all_mounts)]
    if inside:
        argv.append("--container-env=" + ",".join(inside))
    step_env = {k: v for k, v in env.items() if k != ENV_KEY}
    step_env.update(inside)  # srun exports its environment; --container-env makes these win inside
    if "PATH" in env:  # srun itself runs on the host
        step_env["PATH"] = env["PATH"]
    return argv + inner, step_env


def training_mounts(config, worker_dir: str) -> tuple[str, ...]:
    """The host paths training reads or writes, mounted at the same path inside: the worker shim, ckpt_output_dir,
    data_output_dir, data_path, model_path (and where its symlinks point: a Hugging Face cache snapshot links to
    ../../blobs). Reads the file system (symlinks), so it runs where the node task runs and in dry runs."""
    paths = [worker_dir, config.ckpt_output_dir, config.data_output_dir, config.data_path, config.model_path]
    found: list[str] = []
    for path in filter(None, paths):
        path = os.path.abspath(str(path))
        found.append(path)
        if os.path.isdir(path):
            for entry in sorted(Path(path).iterdir()):
                if entry.is_symlink():
                    target = os.path.dirname(os.path.realpath(entry))
                    if not under(target, [path]):
                        found.append(target)
    found = list(dict.fromkeys(found))
    return tuple(p for p in found if not under(p, [q for q in found if q != p]))  # nested ones are covered


def shown(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def check_lines(container: Container) -> list[str]:
    """Shell lines for the batch script (after slurm.setup, which may load the runtime): stop at once, with the
    reason, where the runtime is missing on the node."""
    if container.runtime == "apptainer":
        return ['command -v apptainer >/dev/null || { echo "hpc-sft: slurm.container: apptainer is not on PATH on '
                '$(hostname) (add e.g. \'module load apptainer\' to slurm.setup)" >&2; exit 1; }']
    return ['srun --help 2>&1 | grep -q -- --container-image || { echo "hpc-sft: slurm.container: srun on '
            '$(hostname) has no --container-image (the pyxis plugin is not installed)" >&2; exit 1; }']


def describe(container: Container, mounts: Sequence[str], executable: str) -> list[str]:
    """The dry run's and the rendered script's container lines: the exact wrapper each node puts around node 0's
    tokenization and torchrun; the launch's own variables (known on the node) are named, not valued."""
    host = Host(executable, hostname="<this node>", resolver="<resolver>")
    argv, _ = wrap(container, ["COMMAND..."], {}, mounts, host)
    return ["training runs in the image; the node task (scontrol, status records, the hang watchdog) stays on the host",
            "each node starts node 0's tokenization (python3 -m hpc_sft.in_image) and torchrun as:",
            "  " + shown(argv).replace("'COMMAND...'", "COMMAND..."),
            "  plus, for each process, the variables the launch sets (PYTHONPATH = the worker shim, HPC_SFT_*, "
            "ACCELERATE_USE_CPU, OMP_NUM_THREADS, CHECKPOINT_TRIGGER_FILENAME, PET_SIGNALS_TO_HANDLE) and the "
            f"host's {', '.join(p + '*' for p in PASS_PREFIXES[:8])}, ... ("
            + ("--env NAME=VALUE" if container.runtime == "apptainer" else "named in --container-env") + "); "
            "each node's log has the exact line ('in container: ...')"]
