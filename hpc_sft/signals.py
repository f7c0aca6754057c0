"""Record the warning signals Slurm sends (time limit lead, preemption) in the process that owns training."""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Callable, Iterable, Iterator, Optional

WARNING_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
# What a process forked from the training parent (a data-processing pool worker, a dataloader worker) gets
# instead of an inherited Python handler: the warnings Slurm sends to every process of a step are ignored
# (only the training parent acts on them, as in the shielded torchrun workers); signals that end a process
# end it again, so that multiprocessing's Pool.terminate() (SIGTERM) and Ctrl-C work.
FORKED_CHILD_DISPOSITION = {
    signal.SIGUSR1: signal.SIG_IGN,
    signal.SIGUSR2: signal.SIG_IGN,
    signal.SIGTERM: signal.SIG_DFL,
    signal.SIGHUP: signal.SIG_DFL,
    signal.SIGXCPU: signal.SIG_DFL,
    signal.SIGINT: signal.default_int_handler,
}
_current: Optional["SignalRecorder"] = None


def received() -> Optional[signal.Signals]:
    """The first warning signal this process's recorder caught, if any."""
    return signal.Signals[_current.received] if _current and _current.received else None


def reset_inherited_handlers() -> None:
    """In a freshly forked child: drop every Python handler for the signals above (hpc-sft's recorder and
    instructlab-training's ParentSignalHandler both catch them, and a child that swallows SIGTERM never
    exits: the data-processing deadlock)."""
    for sig, disposition in FORKED_CHILD_DISPOSITION.items():
        current = signal.getsignal(sig)
        if callable(current) and current is not signal.default_int_handler:
            try:
                signal.signal(sig, disposition)
            except (ValueError, OSError):  # not the main thread of the main interpreter
                return


os.register_at_fork(after_in_child=reset_inherited_handlers)  # once per process, at first import


@contextlib.contextmanager
def handled(sigs: Iterable[signal.Signals], handler: Callable) -> Iterator[None]:
    """While the block runs `handler` handles `sigs`; the handlers before come back afterwards (one set outside
    Python, which reads as None, comes back as SIG_DFL)."""
    saved = {sig: signal.signal(sig, handler) for sig in sigs}
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def leave_quietly() -> None:
    """A node that has decided (finish, requeue, give up) only has to leave: from now on the warning and
    SIGTERM are ignored, so that a late time-limit warning or the requeue's SIGTERM cannot end it during
    the interpreter's exit, where Python puts its handlers back to the default (SIG_IGN it keeps) and Slurm
    would then count a finished task as failed. Slurm's SIGKILL after KillWait still ends a stuck exit."""
    for sig in WARNING_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class SignalRecorder:
    """Installs handlers that only remember the first signal; instructlab-training swaps in its own
    handlers while it trains and restores these afterwards. Forked children never inherit them."""

    def __init__(self) -> None:
        self.received: Optional[str] = None

    def _handle(self, signum: int, _frame) -> None:
        self.received = self.received or signal.Signals(signum).name

    def install(self) -> "SignalRecorder":
        global _current
        _current = self
        for sig in WARNING_SIGNALS:
            signal.signal(sig, self._handle)
        return self
