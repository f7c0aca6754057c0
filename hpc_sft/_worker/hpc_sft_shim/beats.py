"""Progress beats for the hang watchdog: each rank writes {HPC_SFT_BEAT_DIR}/rankR.json after every optimizer
step and around every save, and dumps its Python stacks into stacks.rankR.txt when the watchdog asks.

Stdlib only; used by the instructlab-training workers (through the shim) and by the trl callback."""

import faulthandler
import functools
import json
import os
import signal
import socket
import time

STACKS_SIGNAL = signal.SIGRTMIN + 3  # never sent by Slurm or torchrun; faulthandler dumps on it
_state = {"step": 0, "stacks": None, "last": None, "saving_since": None}


def beat_dir():
    return os.environ.get("HPC_SFT_BEAT_DIR") or None


def beat(phase: str, step=None) -> None:
    """Record this rank's progress: phase is "step", "saving" or "saved" (no-op without HPC_SFT_BEAT_DIR)."""
    folder = beat_dir()
    if not folder:
        return
    if step is not None:
        _state["step"] = step
    now, rank = time.time(), int(os.environ.get("RANK", "0"))
    record = {"rank": rank, "phase": phase, "step": _state["step"], "time": now, "pid": os.getpid(),
              "host": socket.gethostname()}
    if phase == "step" and _state["last"] is not None:
        record["step_s"] = round(now - _state["last"], 3)  # what the watchdog learns a step may take
    if phase == "saving":
        _state["saving_since"] = now
    if phase == "saved" and _state["saving_since"] is not None:
        record["save_s"] = round(now - _state["saving_since"], 3)
    _state["last"] = now
    path = os.path.join(folder, f"rank{rank}.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(record, fh)
    os.replace(path + ".tmp", path)


def arm_stack_dumps() -> None:
    """faulthandler writes every thread's stack to stacks.rankR.txt on STACKS_SIGNAL (works while the
    interpreter is blocked in C code, e.g. inside a collective)."""
    folder = beat_dir()
    if not folder or _state["stacks"] is not None:
        return
    os.makedirs(folder, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    _state["stacks"] = open(os.path.join(folder, f"stacks.rank{rank}.txt"), "w")
    faulthandler.register(STACKS_SIGNAL, file=_state["stacks"], all_threads=True, chain=False)
    beat("start")


def install() -> None:
    """instructlab-training workers: beats on every optimizer step and around both kinds of save."""
    from hpc_sft_shim.hooks import on_import

    arm_stack_dumps()
    on_import("instructlab.training.accelerator", _beat_on_steps)
    on_import("instructlab.training.utils", _beat_around_saves)


def _beat_on_steps(module) -> None:
    from .hooks import call_after

    call_after(module.Accelerator, "take_optimizer_step", lambda *_: beat("step", _state["step"] + 1))


def _beat_around_saves(module) -> None:
    for name in ("save_hf_format_accelerate", "save_full_state"):
        setattr(module, name, _bracketed(getattr(module, name)))


def _bracketed(save):
    @functools.wraps(save)
    def wrapper(*args, **kwargs):
        beat("saving")
        result = save(*args, **kwargs)
        beat("saved")
        return result

    return wrapper
