"""The training parent of instructlab-training's torchrun, in this process: tee its output to the node's full
log and, on a stop signal, ask the workers for an on-demand full-state save and wait for it (as run_training)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

from ... import signals
from ...launch import spawn_shielded

# What run_training's ParentSignalHandler catches; each asks the workers for a full-state save
CATCHABLE = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGXCPU, signal.SIGHUP)
SAVE_WAIT_S = 300  # how long the workers get to save after a signal (run_training's figure)
EXIT_WAIT_S = 60  # then for torchrun to exit, before SIGTERM, and again before SIGKILL
TRIGGER_DIR = Path("/dev/shm")  # where instructlab-training's workers look for the trigger file


def say(message: str) -> None:
    """A line in the node's log, time-stamped as the node task's logging lines are."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
    print(f"{stamp} hpc_sft.instructlab INFO: {message}", flush=True)


def trigger_path(env: dict[str, str]) -> Path:
    return TRIGGER_DIR / env.get("CHECKPOINT_TRIGGER_FILENAME", "checkpoint_requested")


def write_trigger(path: Path) -> None:
    """Atomically (temp file and rename), so that no worker reads half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ckpt_trigger_")
    try:
        os.write(fd, b"1")
    finally:
        os.close(fd)
    os.rename(tmp, path)


class SaveOnSignal:
    """While active, the first catchable signal writes the trigger file the workers poll after each step,
    and is remembered; a signal hpc-sft's recorder caught just before counts too (it would be lost)."""

    def __init__(self, trigger: Path) -> None:
        self.trigger, self.received = trigger, None

    def handle(self, signum: int, _frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            say(f"On-demand checkpoint: got {self.received}; asking the workers for a full-state save")
            write_trigger(self.trigger)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self.trigger.unlink(missing_ok=True)  # a killed earlier run's file would stop this one at once
        try:
            with signals.handled(CATCHABLE, self.handle):
                early = signals.received()
                if early is not None:
                    self.handle(early, None)
                yield
        finally:
            self.trigger.unlink(missing_ok=True)


def tee(stream: BinaryIO, log_file: Path) -> None:
    """Copy the child's output to our stdout and to log_file until it closes (in chunks, not bytes)."""
    out = getattr(sys.stdout, "buffer", None)
    with log_file.open("wb") as log:
        while chunk := os.read(stream.fileno(), 65536):
            log.write(chunk)
            log.flush()
            if out is not None:
                out.write(chunk)
                out.flush()
            else:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()


def wait(proc: subprocess.Popen, seconds: float) -> Optional[int]:
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def finish(proc: subprocess.Popen, signalled: bool) -> Optional[int]:
    """torchrun's exit code; after a signal the workers first get SAVE_WAIT_S to save, then SIGTERM and
    SIGKILL follow if it still runs."""
    if signalled and wait(proc, SAVE_WAIT_S) is None:
        say(f"On-demand checkpoint: the workers did not finish within {SAVE_WAIT_S} s")
    code = wait(proc, EXIT_WAIT_S)
    if code is None:
        say("torchrun has not exited; sending SIGTERM")
        proc.terminate()
        code = wait(proc, EXIT_WAIT_S)
    if code is None:
        say("torchrun did not exit after SIGTERM; sending SIGKILL")
        proc.kill()
        code = wait(proc, 10)
    return code


def run(command: list[str], env: dict[str, str], log_file: Path, on_demand: bool) -> tuple[Optional[int], Optional[str]]:
    """Run torchrun to its end: (exit code, None when it never exited; the signal that asked for a save)."""
    shield = SaveOnSignal(trigger_path(env)) if on_demand else None
    with shield.active() if shield is not None else contextlib.nullcontext():
        proc = spawn_shielded(command, env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            tee(proc.stdout, log_file)
        finally:
            code = finish(proc, shield is not None and shield.received is not None)
            proc.stdout.close()
    return code, shield.received if shield is not None else None
