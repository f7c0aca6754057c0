"""Node 0's data-phase watchdog: tokenizing uses CPU; when node 0's process tree has used almost none for
slurm.hang_timeout_s (a deadlocked worker pool, a stuck read), it dumps the stacks into the job log, ends the
pool and raises DataHang in the main thread, so node 0 fails with the reason and the waiting nodes stop at once
(datacache's heartbeat reports the failure) instead of the allocation burning until its time limit."""
from __future__ import annotations

import faulthandler
import os
import signal
import socket
import sys
import threading
import time
from typing import Optional

from ...errors import TrainingError, with_fix
from .watchdog import MARK, descendants, proc_state

HANG_SIGNAL = signal.SIGRTMIN + 4  # raises DataHang in the main thread
MIN_CPU_S = 1.0  # less CPU than this over the whole timeout: no progress
LEAVE_S = 60.0  # the main thread did not leave in this long after DataHang: end the process
_TICK = os.sysconf("SC_CLK_TCK")


class DataHang(TrainingError):
    """Node 0's data processing made no progress for slurm.hang_timeout_s."""


def cpu_seconds(pid: int) -> float:
    """CPU time used by pid (its reaped children included), plus that of every living descendant."""
    def own(p: int) -> float:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        return sum(int(v) for v in fields[11:15]) / _TICK  # utime stime cutime cstime

    return own(pid) + sum(own(child) for child in descendants(pid))


def work_seconds() -> float:
    """CPU used by this process tree, less what this watchdog thread spent reading /proc."""
    return cpu_seconds(os.getpid()) - time.thread_time()


def quiet(samples: list[tuple[float, float]], timeout_s: float) -> Optional[float]:
    """The CPU used over the last timeout_s when it is below MIN_CPU_S (None: progress, or too early).
    samples: (time, cpu seconds), oldest first. Pure."""
    now, cpu = samples[-1]
    old = [s for s in samples if s[0] <= now - timeout_s]
    if not old:
        return None
    used = cpu - old[-1][1]
    return used if used < MIN_CPU_S else None


class DataWatch:
    """Around node 0's data phase (in the main thread); `fired` holds the reason once it acted."""

    def __init__(self, timeout_s: float, poll_s: float = 2.0) -> None:
        self.timeout_s, self.poll_s, self.fired = float(timeout_s), poll_s, None
        self._stop, self._main = threading.Event(), threading.main_thread().ident
        self._thread = threading.Thread(target=self._run, name="hpc-sft-data-watchdog", daemon=True)
        self._previous = None

    def __enter__(self) -> "DataWatch":
        if self.timeout_s > 0:
            self._previous = signal.signal(HANG_SIGNAL, self._raise)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.timeout_s > 0:
            self._thread.join(timeout=10)
            signal.signal(HANG_SIGNAL, self._previous or signal.SIG_DFL)

    def _raise(self, *_args) -> None:
        raise DataHang(self.fired or "data processing hung")

    def _run(self) -> None:
        samples = [(time.monotonic(), work_seconds())]
        while not self._stop.wait(self.poll_s):
            samples.append((time.monotonic(), work_seconds()))
            used = quiet(samples, self.timeout_s)
            if used is not None:
                self._act(used)
                return

    def _act(self, used: float) -> None:
        host = socket.gethostname()
        self.fired = with_fix(f"data processing on node 0 ({host}) made no progress: {used:.1f}s of CPU in the "
                              f"last {self.timeout_s:.0f}s (slurm.hang_timeout_s)",
                              f"read the stacks under '{MARK}' in node 0's log; a deadlocked tokenizer pool goes "
                              "away with data_process_num_cpu_procs=1")
        print(f"\n{MARK} on node 0 ({host}): {self.fired}\n{MARK} stacks of node 0's main process "
              f"(pid {os.getpid()}):", flush=True)
        faulthandler.dump_traceback(file=sys.stdout, all_threads=True)
        for pid in descendants(os.getpid()):
            print(f"{MARK} child process {pid} state {proc_state(pid)}; ending it", flush=True)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        signal.pthread_kill(self._main, HANG_SIGNAL)
        if not self._stop.wait(LEAVE_S):  # the main thread is stuck where no signal reaches Python
            print(f"{MARK}: node 0's main thread did not stop; ending the process", flush=True)
            os._exit(70)
