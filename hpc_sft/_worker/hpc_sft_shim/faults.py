"""Fault injection for tests (HPC_SFT_FAULT_* variables; stdlib only): slow steps, slow saves, a late exit.

HPC_SFT_FAULT_NODE=R limits every fault to node rank R (GROUP_RANK in torchrun's workers, SLURM_NODEID in
torchrun itself); unset, every node has it.
A real cluster never sets these; the tests use them to put a real run in a state that timing alone would
reach only sometimes (a save still open when a kill lands, a node that leaves last, a run that outlasts its
time limit)."""

import os
import sys
import time


def _on_this_node() -> bool:
    node = os.environ.get("HPC_SFT_FAULT_NODE", "").strip()
    return not node or node == (os.environ.get("GROUP_RANK") or os.environ.get("SLURM_NODEID") or "0")


def seconds(name: str) -> float:
    """The delay HPC_SFT_FAULT_<name>_S asks for on this node (0 when unset)."""
    return float(os.environ.get(f"HPC_SFT_FAULT_{name}_S") or 0) if _on_this_node() else 0.0


def pause(name: str, what: str = "") -> None:
    """Sleep for HPC_SFT_FAULT_<name>_S, saying so on stderr when `what` is given."""
    delay = seconds(name)
    if delay > 0:
        if what:
            sys.stderr.write(f"hpc-sft fault injection: {what} ({delay:g}s)\n")
        time.sleep(delay)


def install() -> None:
    """instructlab-training workers: HPC_SFT_FAULT_STEP_DELAY_S after every optimizer step."""
    if seconds("STEP_DELAY") <= 0:
        return
    from hpc_sft_shim.hooks import on_import

    on_import("instructlab.training.accelerator", _slow_steps)


def _slow_steps(module) -> None:
    from .hooks import call_after

    call_after(module.Accelerator, "take_optimizer_step", lambda *_: pause("STEP_DELAY"))


def install_launcher() -> None:
    """torchrun itself: HPC_SFT_FAULT_LAUNCHER_EXIT_DELAY_S keeps it alive after its workers have ended
    (the node that is last to leave when a loaded machine schedules it late); a SIGTERM then ends it as it
    would end a torchrun still at work (exit -15)."""
    if os.path.basename(sys.argv[0] if sys.argv else "") != "torchrun" or seconds("LAUNCHER_EXIT_DELAY") <= 0:
        return
    import atexit

    atexit.register(_leave_late)


def _leave_late() -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    pause("LAUNCHER_EXIT_DELAY", "torchrun leaves late")
