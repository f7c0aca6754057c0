"""Experiment tracking (sft()'s `tracking`): which trackers a value names, the packages they need, and the
environment that makes the backends' own loggers continue ONE run across requeues and resumes.

- TensorBoard: one fixed folder, {ckpt_output_dir}/tensorboard (the backends log steps of the whole run there,
  continuing from the resumed step).
- Weights & Biases: a run id created on the first start and kept in {ckpt_output_dir}/hpc_sft_wandb_run_id, so
  every requeue resumes the same run (WANDB_RUN_ID + WANDB_RESUME=allow); its files go to
  {ckpt_output_dir}/wandb; offline (WANDB_MODE=offline) unless the user set WANDB_MODE: compute nodes have no
  network, `wandb sync` uploads from the login node (docs/tracking.md).

Pure and light (no wandb, tensorboard or torch import): the login node validates with it.
"""
from __future__ import annotations

import importlib.util
import os
import secrets
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import ConfigError
from .rundir.layout import TENSORBOARD_DIR, WANDB_RUN_ID_FILE

NONE = "none"
TRACKERS = ("tensorboard", "wandb")
#: tracker -> (module that must be importable where training runs, what to install)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
EXTRA = "hpc-sft[track]"
DEFAULT_PROJECT = "hpc-sft"  # WANDB_PROJECT unless the user set one
SHIM_ENV = "HPC_SFT_TRACKING"  # instructlab-training workers: one TensorBoard folder, steps of the whole run


class Choices(tuple):
    """The valid `tracking` values, where a list of them (or 'a,b') is also a valid value: the generic
    choices check (`value in choices`) then accepts exactly what `trackers()` understands."""

    def __contains__(self, value: Any) -> bool:
        try:
            names = _names(value)
        except TypeError:
            return False
        return all(tuple.__contains__(self, name) for name in names)


CHOICES = Choices((NONE, *TRACKERS))


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return [name for item in value for name in _names(item)]
    raise TypeError(f"not a tracker name or a list of them: {value!r}")


def trackers(value: Any) -> tuple[str, ...]:
    """The trackers a `tracking` value names, in order, without 'none' and repeats: None, 'none', [] -> ();
    'tensorboard' -> ('tensorboard',); ['tensorboard', 'wandb'] or 'tensorboard,wandb' -> both."""
    try:
        names = _names(value)
    except TypeError:
        raise ConfigError("tracking", f"must be a tracker name or a list of them, got {value!r}",
                          f"use one of: {', '.join(CHOICES)}, or a list such as ['tensorboard', 'wandb']") from None
    bad = [name for name in names if name not in CHOICES]
    if bad:
        raise ConfigError("tracking", f"invalid value {bad[0]!r}", f"use one of: {', '.join(CHOICES)}")
    return tuple(dict.fromkeys(name for name in names if name != NONE))


def check_supported(value: Any, supported: tuple[str, ...], backend: str) -> None:
    """ConfigError when the backend cannot log to a tracker asked for."""
    for name in trackers(value):
        if name not in supported:
            raise ConfigError("tracking", f"{name!r} is not supported by the {backend} backend",
                              f"use one of: {', '.join((NONE, *supported))}")


def check_installed(value: Any) -> None:
    """ConfigError naming the pip command when a tracker's package is not installed in this environment
    (checked where training runs too, before it starts)."""
    for name in trackers(value):
        module, package = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError("tracking", f"{name!r} needs the {package} package, which is not installed in "
                              f"{sys.prefix}", f"pip install '{EXTRA}' (or pip install {package}) in the "
                              "environment training runs in, or drop it from tracking")


def tensorboard_dir(ckpt_dir) -> Path:
    return Path(ckpt_dir) / TENSORBOARD_DIR


def wandb_run_id(ckpt_dir) -> str:
    """The W&B run id of this ckpt_output_dir: created once, on the first start (atomically: several nodes may
    ask at once), then read by every requeue and resume."""
    ckpt = Path(ckpt_dir)
    path = ckpt / WANDB_RUN_ID_FILE
    if not path.is_file():
        ckpt.mkdir(parents=True, exist_ok=True)
        tmp = ckpt / f".{WANDB_RUN_ID_FILE}.{socket.gethostname()}.{os.getpid()}"
        tmp.write_text(secrets.token_hex(4) + "\n")
        try:
            os.link(tmp, path)  # fails when another process created it first: then its id is the one
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(tmp.read_text())
        finally:
            tmp.unlink(missing_ok=True)
    run_id = path.read_text().strip()
    if not run_id:
        raise ConfigError("tracking", f"{path} is empty", f"delete {path} (a new W&B run starts) or write the "
                          "id of the run to continue into it")
    return run_id


def env(value: Any, ckpt_dir, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Environment variables for the training processes: only those the user has not set (a user's WANDB_MODE,
    WANDB_PROJECT, WANDB_RUN_ID or WANDB_DIR wins)."""
    names = trackers(value)
    out: dict[str, str] = {}
    if names:
        out[SHIM_ENV] = "1"
    if "wandb" in names:
        wanted = {"WANDB_MODE": "offline", "WANDB_PROJECT": DEFAULT_PROJECT, "WANDB_RESUME": "allow",
                  "WANDB_DIR": str(Path(ckpt_dir)), "WANDB_RUN_ID": None}
        for key, default in wanted.items():
            if not environ.get(key):
                out[key] = default if default is not None else wandb_run_id(ckpt_dir)
    return out


@contextmanager
def environment(changes: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `changes` for the duration (for a backend that trains inside the calling process)."""
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
