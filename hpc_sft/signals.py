"""Record the warning signals Slurm sends (time limit lead, preemption) in the process that owns training."""
from __future__ import annotations

import signal
from typing import Optional

WARNING_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
_current: Optional["SignalRecorder"] = None


def received() -> Optional[signal.Signals]:
    """The first warning signal this process's recorder caught, if any."""
    return signal.Signals[_current.received] if _current and _current.received else None


class SignalRecorder:
    """Installs handlers that only remember the first signal; instructlab-training swaps in its own
    handlers while it trains and restores these afterwards."""

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
