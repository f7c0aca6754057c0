"""What a person sees during a local run: a short progress line from the metrics file; the full logs go to a file."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Iterator, Optional

from .rundir.layout import LOCAL_LOG, METRICS_FILE

VERBOSE_ENV = "HPC_SFT_VERBOSE"  # 1: stream the backend's full output (the CLI's --verbose sets it)
ERROR_LINE = re.compile(r"\b\w*(Error|Exception)\b: ")  # 'SafetensorError: ...', 'RuntimeError: ...'
INTERVAL_S = 5.0  # without a terminal: at most one progress line per interval (and the last one)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def local_log(ckpt_dir) -> Path:
    return Path(ckpt_dir) / LOCAL_LOG


def clock(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def eta_seconds(first: dict, last: dict, total: Optional[int]) -> Optional[float]:
    """Seconds left at the pace between two metric records of this run. Pure."""
    if not total or first is last:
        return None
    seconds = (datetime.fromisoformat(last["timestamp"]) - datetime.fromisoformat(first["timestamp"])).total_seconds()
    done = last["samples_seen"] - first["samples_seen"]
    return max(0.0, (total - last["samples_seen"]) * seconds / done) if done > 0 and seconds > 0 else None


def progress_line(rec: dict, total: Optional[int], eta_s: Optional[float]) -> str:
    """'step 7  samples 112/512 (22%)  loss 4.1234  lr 9.99e-04  eta 0:00:15' from one metric record. Pure."""
    samples = rec.get("samples_seen", 0)
    share = f" ({100 * samples / total:.0f}%)" if total else ""
    loss = rec.get("avg_loss", rec.get("loss"))
    lr = rec.get("lr", rec.get("learning_rate"))
    parts = [f"step {rec.get('step', '?')}", f"samples {samples}/{total or '?'}{share}",
             f"loss {loss:.4f}" if isinstance(loss, (int, float)) else "loss ?",
             f"lr {lr:.2e}" if isinstance(lr, (int, float)) else "lr ?", f"eta {clock(eta_s)}"]
    return "  ".join(parts)


def new_records(path: Path, offset: int) -> tuple[list[dict], int]:
    """Per-step records (complete lines with samples_seen) from byte `offset`, and the offset after them."""
    if not path.is_file():
        return [], offset
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    complete = data[:data.rfind(b"\n") + 1]
    records = []
    for line in complete.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "samples_seen" in rec and "timestamp" in rec:
            records.append(rec)
    return records, offset + len(complete)


class Ticker:
    """A thread that prints the newest step of the metrics file: a \\r-updated line on a terminal, else a
    line every INTERVAL_S seconds; close() prints the last step on its own line."""

    def __init__(self, ckpt_dir, epochs: int, out: IO[str], interval: float = INTERVAL_S) -> None:
        self.path, self.epochs, self.out, self.interval = Path(ckpt_dir) / METRICS_FILE, max(1, epochs), out, interval
        self.offset = self.path.stat().st_size if self.path.is_file() else 0
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.first: Optional[dict] = None
        self.last: Optional[dict] = None
        self.shown: Optional[dict] = None
        self.printed_at = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="hpc-sft-progress", daemon=True)

    def start(self) -> "Ticker":
        self.thread.start()
        return self

    def line(self) -> str:
        total = self.last.get("total_samples", 0) * self.epochs or None
        return progress_line(self.last, total, eta_seconds(self.first, self.last, total))

    def _poll(self) -> None:
        records, self.offset = new_records(self.path, self.offset)
        if records:
            self.first = self.first or records[0]
            self.last = records[-1]

    def _show(self, final: bool = False) -> None:
        if self.last is None or self.last is self.shown:
            return
        now = time.monotonic()
        if self.tty:
            self.out.write("\r" + self.line().ljust(79) + ("\n" if final else ""))
        elif final or now - self.printed_at >= self.interval:
            self.out.write(self.line() + "\n")
        else:
            return
        self.out.flush()
        self.shown, self.printed_at = self.last, now

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            self._poll()
            self._show()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self._poll()
        if self.tty and self.shown is self.last and self.last is not None:
            self.out.write("\n")
            self.out.flush()
        else:
            self._show(final=True)


def terminal_stream() -> IO[str]:
    """Where a person sees output: a copy of fd 1 when sys.stdout writes to it, else sys.stdout itself
    (click's test runner, notebooks)."""
    try:
        if sys.stdout.fileno() == 1:
            return os.fdopen(os.dup(1), "w", buffering=1)
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass
    return sys.stdout


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (fds 1 and 2, which children inherit, and sys.stdout/stderr)
    to `log`, appending; restore them afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log.parent.mkdir(parents=True, exist_ok=True)
    sink = open(log, "a", buffering=1, encoding="utf-8", errors="replace")
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        sink.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        sink.close()


class Console:
    """Messages and progress of one local run: quiet (one progress line, full log in LOCAL_LOG) unless
    verbose (HPC_SFT_VERBOSE=1 or verbose=True), which streams the backend's output as before."""

    def __init__(self, ckpt_dir, epochs: int, loud: Optional[bool] = None) -> None:
        self.ckpt, self.epochs = Path(ckpt_dir), epochs
        self.loud = verbose() if loud is None else loud
        self.start = 0  # where this run's part of the log begins

    @property
    def log(self) -> Path:
        return local_log(self.ckpt)

    def say(self, text: str) -> None:
        sys.stdout.write(f"hpc-sft: {text}\n")
        sys.stdout.flush()

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        if self.loud:
            yield
            return
        self.say(f"training; full log: {self.log} (--verbose or {VERBOSE_ENV}=1 streams it here)")
        self.start = self.log.stat().st_size if self.log.is_file() else 0
        out = terminal_stream()
        ticker = Ticker(self.ckpt, self.epochs, out).start()
        try:
            with output_to(self.log):
                yield
        finally:
            ticker.close()
            if out is not sys.stdout:
                out.close()

    def tail(self, lines: int = 8) -> str:
        """What this run's part of the full log says went wrong (shown when training fails): its first
        error lines (the root cause; torchrun's own summary error aside), then its last lines."""
        if self.loud or not self.log.is_file():
            return ""
        with self.log.open("rb") as fh:
            fh.seek(max(self.start, self.log.stat().st_size - 262144))
            text = fh.read().decode(errors="replace").splitlines()
        errors = list(dict.fromkeys(line.strip() for line in text if ERROR_LINE.search(line)
                                    and "ChildFailedError" not in line))[:3]
        return "\n".join([*errors, "...", *text[-lines:]] if errors else text[-lines:])
