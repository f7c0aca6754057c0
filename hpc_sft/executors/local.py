"""The local executor: run the backend on this machine, now; Ctrl-C or SIGTERM saves a full state and stops."""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Optional

from .. import jobs
from . import JobState
from ..console import Console
from ..errors import HpcSftError, Interrupted, TrainingError
from ..launch import Launch, finalize, local_launch
from ..requeue import StateFacts, finished
from ..result import TrainingResult
from ..rundir import lock as ckpt_lock
from ..rundir import settings as run_settings
from ..rundir.layout import node_log, result_from_disk
from ..signals import WARNING_SIGNALS, SignalRecorder


@dataclass(frozen=True)
class LocalPlan:
    config: object
    launch: Launch

    def describe(self) -> str:
        lch = self.launch
        return (f"local run: {lch.nnodes} node(s), this is node {lch.node_rank}, "
                f"{lch.nproc_per_node} process(es) on {lch.device}, checkpoints in {self.config.ckpt_output_dir}")


log = logging.getLogger("hpc_sft.local")
STOP_SIGNALS = (*WARNING_SIGNALS, signal.SIGINT)


@contextlib.contextmanager
def recorded_signals() -> Iterator[SignalRecorder]:
    """While the run lasts, TERM, USR1, USR2 and Ctrl-C (INT) only get recorded (the backend turns them
    into a save and a stop); the caller's handlers come back afterwards."""
    recorder = SignalRecorder()
    if threading.current_thread() is not threading.main_thread():
        yield recorder  # signal handlers can only be set from the main thread
        return
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    recorder.install()
    signal.signal(signal.SIGINT, recorder._handle)
    try:
        yield recorder
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def wants_on_demand(config) -> bool:
    """On-demand checkpointing is on for local runs unless the user turned it off explicitly."""
    return config.backend_kwargs.get("on_demand_checkpointing", True) is not False


def where(state: Optional[StateFacts], path: Optional[Path], total: Optional[int]) -> str:
    """'full_state/epoch_0 at 112 of 256 samples'."""
    of = f" of {total}" if total else ""
    return f"{path} at {state.samples_seen}{of} samples"


def interrupted(signal_name: str, state, path, total, log_path: Path, saved: bool = True) -> Interrupted:
    """The error a signalled run ends with; saved=False: the run died of the signal before it could save."""
    if state is None:
        return Interrupted(signal_name, f"interrupted by {signal_name} before a full state was saved; rerunning "
                                        f"the same command starts from the beginning (log: {log_path})")
    if not saved:
        return Interrupted(signal_name, f"interrupted by {signal_name} before it could save; the newest full state "
                                        f"is {path} at {state.samples_seen} of {total or '?'} samples. Rerun the "
                                        f"same command to resume from there (log: {log_path})")
    return Interrupted(signal_name, f"interrupted by {signal_name}: stopped at {state.samples_seen} of "
                                    f"{total or '?'} samples; full state saved in {path}. Rerun the same command "
                                    f"to resume from there (log: {log_path})")


class LocalExecutor:
    name = "local"

    def job_state(self, rec: dict) -> JobState:
        """A local run's state from its record (RUNNING whose process is gone reads DIED)."""
        now = jobs.local_state(rec)
        extra = {"pid": rec.get("pid"), "signal": rec.get("signal"),
                 "last_complete_state": rec.get("last_complete_state"), "state_samples": rec.get("samples_seen")}
        return JobState(now["state"], now["state"] == "RUNNING",
                        f"local run {rec['job_id']}: {now['state']}  (pid {rec.get('pid')}, elapsed {now['elapsed']})",
                        rec.get("log"), None, now["elapsed"], extra)

    def cancel(self, rec: dict) -> str:
        """SIGTERM to the run (it saves a full state and stops); HpcSftError when it is not running here."""
        if not jobs.cancel_local(rec):
            raise HpcSftError(f"local run {rec['job_id']} is not running here ({jobs.local_state(rec)['state']}); "
                              "nothing to cancel")
        return (f"sent SIGTERM to local run {rec['job_id']} (pid {rec['pid']}); it saves a full state and stops; "
                f"checkpoints stay in {rec['ckpt_output_dir']}")

    def log_path(self, rec: dict, node: int, stderr: bool) -> Path:
        return Path(rec["log"])  # one log, stdout and stderr together

    def plan(self, config) -> LocalPlan:
        return LocalPlan(config, local_launch(config))

    def submit(self, plan: LocalPlan, backend) -> TrainingResult:
        backend.check_values(plan.config)
        launch = replace(finalize(plan.launch), on_demand_checkpointing=wants_on_demand(plan.config))
        ckpt = Path(plan.config.ckpt_output_dir)
        ckpt_lock.acquire(ckpt, None)
        try:
            run_settings.record(plan.config, backend.free_kwargs)
            with recorded_signals() as recorder:
                return self.run(plan.config, launch, backend, recorder)
        finally:
            ckpt_lock.release(ckpt)

    def run(self, config, launch: Launch, backend, recorder: SignalRecorder) -> TrainingResult:
        ckpt, epochs = Path(config.ckpt_output_dir), config.num_epochs or 1
        console = Console(ckpt, epochs)
        backend.tidy_checkpoints(ckpt, log.warning)
        rec = jobs.record_local(str(ckpt.resolve()), str(console.log if not console.loud else full_log(ckpt)))
        total = total_samples(ckpt, epochs)
        before, before_path = backend.progress(config)
        if before is not None and not finished(before, epochs):
            console.say(f"resuming from {where(before, relative(before_path, ckpt), total)}")
        try:
            with console.training():
                backend.execute_training(config, launch)
        except TrainingError as exc:
            if signal_seen(backend, recorder):  # e.g. Ctrl-C also ended a data-processing pool's workers
                raise self.died_of_signal(config, backend, rec, signal_seen(backend, recorder), console) from exc
            jobs.update(rec, state="FAILED", reason=str(exc))
            tail = console.tail()
            raise TrainingError(f"{exc}\n--- from {console.log} ---\n{tail}" if tail else str(exc)) from exc
        except BaseException as exc:  # anything else still ends the record (status would say DIED)
            jobs.update(rec, state="FAILED", reason=f"{type(exc).__name__}: {exc}")
            raise
        return self.conclude(config, backend, rec, signal_seen(backend, recorder), console)

    def died_of_signal(self, config, backend, rec: dict, signal_name: str, console: Console) -> Interrupted:
        """Training failed after a stop signal: say so, and where a rerun resumes (not a bare failure)."""
        state, path = backend.progress(config)
        jobs.update(rec, state="INTERRUPTED", signal=signal_name, samples_seen=state.samples_seen if state else None,
                    last_complete_state=str(path) if path else None)
        total = total_samples(Path(config.ckpt_output_dir), config.num_epochs or 1)
        return interrupted(signal_name, state, path, total, console.log, saved=False)

    def conclude(self, config, backend, rec: dict, signal_name: Optional[str], console: Console) -> TrainingResult:
        """Finished -> the result; stopped by a signal -> Interrupted, saying where and how to resume."""
        ckpt, epochs = Path(config.ckpt_output_dir), config.num_epochs or 1
        state, path = backend.progress(config)
        samples = state.samples_seen if state else None
        if signal_name and not finished(state, epochs):
            jobs.update(rec, state="INTERRUPTED", signal=signal_name, samples_seen=samples,
                        last_complete_state=str(path) if path else None)
            raise interrupted(signal_name, state, path, total_samples(ckpt, epochs), console.log)
        result = result_from_disk(ckpt)
        jobs.update(rec, state="FINISHED", samples_seen=result.samples_seen,
                    last_complete_state=str(path) if path else None)
        return result


def signal_seen(backend, recorder: SignalRecorder) -> Optional[str]:
    """The signal that stopped training: the backend's own handler saw it (instructlab-training swaps in
    its handlers while it trains), or ours did (before or after that, and for trl)."""
    return getattr(backend, "stop_signal", None) or recorder.received


def total_samples(ckpt: Path, epochs: int) -> Optional[int]:
    """Samples in the whole run, from the metrics file of an earlier run (None before the first)."""
    from ..progress import run_status

    per_epoch = run_status(ckpt).get("samples_per_epoch")
    return per_epoch * epochs if per_epoch else None


def relative(path: Optional[Path], ckpt: Path) -> Optional[Path]:
    try:
        return Path(path).relative_to(ckpt)
    except (TypeError, ValueError):
        return path


def full_log(ckpt: Path) -> Path:
    return ckpt / node_log(0)
