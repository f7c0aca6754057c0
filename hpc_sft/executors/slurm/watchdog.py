"""The hang watchdog of one node: it reads every rank's progress beats (a shared folder); when no rank has
progressed for longer than its phase allows, it dumps the stacks of this node's training processes into the
job log, names the ranks that look stuck, leaves a hang record for node 0, and ends the node's training
processes, so that the job requeues (without the suspect node) instead of burning its allocation."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from ..._worker.hpc_sft_shim.beats import STACKS_SIGNAL
from ...errors import HpcSftError
from ...rundir.layout import beats_dir, hang_record_file

log = logging.getLogger("hpc_sft.watchdog")
MARK = "==== HPC-SFT HANG"
STARTUP_FACTOR = 4  # start-up (model load, rendezvous, first step) and a first save are not measured yet
SAVE_FACTOR = 3  # a later save may take this many times the longest save so far
STEP_FACTOR = 10  # a step may take this many times the longest step so far
PEER_GRACE_S = 10.0  # the node that finds a hang waits this long before ending its processes
STUCK = {"T": "is stopped (state T)", "t": "is stopped by a tracer (state t)",
         "D": "is in an uninterruptible wait (state D)"}


@dataclass(frozen=True)
class Stall:
    """What the watchdog found: the quiet time, the limit it passed, and each rank's last beat."""

    phase: str
    quiet_s: float
    limit_s: float
    beats: dict

    peer: str = ""  # set when another node found the hang: "node N (host)"

    def describe(self) -> str:
        steps = ", ".join(f"rank {r}: {b.get('phase')} step {b.get('step')}" for r, b in sorted(self.beats.items()))
        if self.peer:
            return f"{self.peer} found a hang; this node's stacks follow; last beats: {steps or 'none'}"
        return (f"no progress for {self.quiet_s:.0f}s in phase {self.phase} (limit {self.limit_s:.0f}s); "
                f"last beats: {steps or 'none'}")


@dataclass
class Timing:
    """The longest step and save seen so far in this run (from the beats' step_s / save_s)."""

    longest_step: float = 0.0
    longest_save: Optional[float] = None

    def learn(self, beats: dict) -> None:
        for record in beats.values():
            self.longest_step = max(self.longest_step, float(record.get("step_s") or 0))
            if record.get("save_s") is not None:
                self.longest_save = max(self.longest_save or 0.0, float(record["save_s"]))


def limit_for(phase: str, timeout_s: float, timing: Timing) -> float:
    """How long `phase` may go without a beat: never less than timeout_s, more where the run showed it needs it."""
    if phase in ("startup", "start"):
        return STARTUP_FACTOR * timeout_s
    if phase == "saving":
        return max(timeout_s, SAVE_FACTOR * timing.longest_save) if timing.longest_save else STARTUP_FACTOR * timeout_s
    return max(timeout_s, STEP_FACTOR * timing.longest_step)


def stalled(beats: dict, world_size: int, started: float, now: float, timeout_s: float,
            timing: Timing) -> Optional[Stall]:
    """A Stall when the least recent rank has been quiet longer than its phase allows, else None. Pure."""
    if len(beats) < world_size:
        phase, last = "startup", started
    else:
        oldest = min(beats.values(), key=lambda b: b["time"])
        saving = any(b.get("phase") == "saving" for b in beats.values())  # the others wait for the saver
        phase, last = ("saving" if saving else oldest.get("phase", "step")), oldest["time"]
    quiet, limit = now - last, limit_for(phase, timeout_s, timing)
    return Stall(phase, quiet, limit, dict(beats)) if quiet > limit else None


def read_beats(folder: Path) -> dict:
    """rank -> its newest beat record."""
    found = {}
    for path in folder.glob("rank*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced
        found[int(record["rank"])] = record
    return found


def proc_state(pid: int) -> Optional[str]:
    """The process's state letter from /proc (R, S, D, T, Z, ...), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Every living process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Watchdog:
    """Started around one node's training; `fired` holds the hang's description once it acted."""

    def __init__(self, folder: Path, ckpt: Path, attempt: str, world_size: int, node_rank: int, timeout_s: float,
                 poll_s: float = 2.0) -> None:
        self.folder, self.ckpt, self.attempt, self.world_size = folder, ckpt, attempt, world_size
        self.record_path = ckpt / hang_record_file(attempt, node_rank)
        self.node_rank, self.timeout_s, self.poll_s = node_rank, timeout_s, poll_s
        self.fired: Optional[str] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpc-sft-watchdog", daemon=True)

    def __enter__(self) -> "Watchdog":
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        started, timing = time.time(), Timing()
        while not self._stop.wait(self.poll_s):
            beats = read_beats(self.folder)
            timing.learn(beats)
            stall = stalled(beats, self.world_size, started, time.time(), self.timeout_s, timing)
            if stall is not None:
                self._act(stall)
                self._stop.wait(PEER_GRACE_S)  # the other nodes see the record and dump their stacks too
                self._end_training()
                return
            peer = self._peer_record()
            if peer is not None:  # another node found the hang first: this node's stacks and suspects too
                self._act(Stall("peer", 0.0, 0.0, beats, f"node {peer['node_rank']} ({peer['host']})"))
                self._end_training()
                return

    def _peer_record(self) -> Optional[dict]:
        """Another node's hang record of this attempt."""
        return next((r for r in hang_records(self.ckpt, self.attempt) if r.get("node_rank") != self.node_rank), None)

    def _end_training(self) -> None:
        print(f"{MARK}: ending this node's training processes; node 0 requeues", flush=True)
        for pid in descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _act(self, stall: Stall) -> None:
        host = socket.gethostname()
        local = {r: b for r, b in stall.beats.items() if b.get("host") == host}
        print(f"\n{MARK} on node {self.node_rank} ({host}): {stall.describe()}", flush=True)
        suspects = self._dump_stacks(local)
        self.fired = f"hang: {stall.describe()}" + (f"; suspects on node {self.node_rank} ({host}): " + "; ".join(
            f"rank {s['rank']} (pid {s['pid']}) {s['why']}" for s in suspects) if suspects else "")
        self.record_path.write_text(json.dumps({"node_rank": self.node_rank, "host": host, "phase": stall.phase,
                                                "quiet_s": round(stall.quiet_s), "time": time.time(),
                                                "suspects": suspects}))
        print(f"{MARK}: {self.fired}", flush=True)

    def _dump_stacks(self, local: dict) -> list[dict]:
        """Ask each local rank for its stacks, copy them into this log; the ranks that look stuck."""
        suspects = []
        for rank, record in sorted(local.items()):
            state = proc_state(record["pid"])
            if state in STUCK:
                suspects.append({"rank": rank, "pid": record["pid"], "why": STUCK[state]})
            if state not in (None, "Z"):  # a process that has ended is no suspect (a peer's hang may end it)
                os.kill(record["pid"], STACKS_SIGNAL)
        time.sleep(3)  # faulthandler writes at once; a stopped process writes nothing
        for rank in sorted(local):
            path = self.folder / f"stacks.rank{rank}.txt"
            text = path.read_text(errors="replace").strip() if path.is_file() else ""
            print(f"{MARK} stacks of rank {rank} (pid {local[rank]['pid']}):\n{text or '(no answer)'}", flush=True)
            alive = proc_state(local[rank]["pid"]) not in (None, "Z")
            if not text and alive and not any(s["rank"] == rank for s in suspects):
                suspects.append({"rank": rank, "pid": local[rank]["pid"], "why": "did not answer the stack dump"})
        return suspects


def hang_records(ckpt: Path, attempt: str) -> list[dict]:
    """Every node's hang record of this attempt (node 0 reads them before it requeues)."""
    records = []
    for path in sorted(ckpt.glob(hang_record_file(attempt, "*"))):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return records


def describe_hang(records: list[dict]) -> Optional[str]:
    """The hang as the job's stop reason, from the first node whose watchdog fired (whichever node that
    was: the nodes race to notice the same stall). Pure."""
    if not records:
        return None
    first = min(records, key=lambda r: r.get("time", 0))
    if first.get("lost"):
        return (f"node lost: node {first['node_rank']} ({first['host']}) did not stop within {first['quiet_s']}s "
                "of node 0's training failing (its host or slurmd died)")
    return (f"hang: no progress for {first['quiet_s']}s in phase {first['phase']} "
            f"(found by node {first['node_rank']} ({first['host']}))")


def record_lost(ckpt: Path, attempt: str, node_rank: int, host: str, waited_s: float) -> None:
    """Node 0, for a node that never said it stopped: a hang record in its name (the requeue excludes it)."""
    (ckpt / hang_record_file(attempt, node_rank)).write_text(json.dumps(
        {"node_rank": node_rank, "host": host, "phase": "lost", "quiet_s": round(waited_s), "time": time.time(),
         "suspects": [], "lost": True}))


def stuck_hosts(ckpt: Path, attempt: str) -> list[str]:
    """The hosts where a watchdog found a stuck rank in this attempt (the requeue excludes them)."""
    return sorted({r["host"] for r in hang_records(ckpt, attempt) if r.get("suspects") or r.get("lost")})


def with_suspects(decision, ckpt: Path, attempt: str):
    """The decision, its reason naming every stuck rank that any node's watchdog found."""
    found = [f"rank {s['rank']} (pid {s['pid']}) on node {r['node_rank']} ({r['host']}) {s['why']}"
             for r in hang_records(ckpt, attempt) for s in r.get("suspects", [])]
    return replace(decision, reason=f"{decision.reason}; stuck: {'; '.join(found)}") if found else decision


def forget_other_attempts(ckpt: Path, attempt: str) -> None:
    """Node 0 before training: remove the beats and hang records of earlier attempts (never this one's)."""
    import shutil

    root = ckpt / Path(beats_dir(attempt)).parent
    for folder in root.iterdir() if root.is_dir() else ():
        if folder.name != attempt:
            shutil.rmtree(folder, ignore_errors=True)
    for path in ckpt.glob(hang_record_file("*", "*")):
        if not path.name.startswith(hang_record_file(attempt, "")[: -len(".json")]):
            path.unlink(missing_ok=True)


def watched_training(backend, config, launch, ckpt: Path, attempt: str) -> Optional[str]:
    """Train under the hang watchdog (slurm.hang_timeout_s; not for training inside this process): the
    hang's description when this node's watchdog fired or another node's did, else None."""
    local = backend.local_processes(launch)
    if not config.slurm.hang_timeout_s or not local:
        backend.execute_training(config, launch)
        return None
    folder = ckpt / beats_dir(attempt)
    launch = replace(launch, env=(*launch.env, ("HPC_SFT_BEAT_DIR", str(folder))))
    dog = Watchdog(folder, ckpt, attempt, local * launch.nnodes, launch.node_rank, config.slurm.hang_timeout_s)
    with dog:
        try:
            backend.execute_training(config, launch)
        except HpcSftError:  # ended by this node's watchdog, or failed because another node's ended its part
            if not (dog.fired or hang_records(ckpt, attempt)):
                raise
    return describe_hang(hang_records(ckpt, attempt)) or dog.fired
