"""Tokenize the training data once per content (node 0 builds and publishes atomically; the others wait, and
stop at once with node 0's reason when its build fails or its heartbeat stops)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

from ._worker.hpc_sft_shim import faults
from .errors import TrainingError

log = logging.getLogger("hpc_sft.data")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt")
DONE = "hpc_sft_done.json"
BEAT_S = 5.0  # node 0 rewrites its build status this often while it tokenizes


def _hash_file(digest, path: Path) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)


def cache_key(config, backend_version: str) -> str:
    """sha256 over the data, the tokenizer files, max_seq_len, chat template, pretraining column, backend."""
    digest = hashlib.sha256()
    _hash_file(digest, Path(config.data_path).expanduser())
    model = Path(config.model_path).expanduser()
    for name in TOKENIZER_FILES:
        if (model / name).is_file():
            digest.update(name.encode())
            _hash_file(digest, model / name)
    template = config.backend_kwargs.get("chat_tmpl_path")
    if template and Path(template).is_file():
        _hash_file(digest, Path(template))
    column = (config.document_column_name or "document") if config.is_pretraining else None
    facts = [str(model) if not model.is_dir() else "", config.max_seq_len, template, column, backend_version]
    digest.update(json.dumps(facts).encode())
    return digest.hexdigest()[:20]


def cache_dir(root: Path, key: str) -> Path:
    return Path(root) / "cache" / key


def is_ready(path: Path) -> bool:
    return (path / DONE).is_file() and (path / "data.jsonl").is_file()


# ---- the build status node 0 keeps next to the cache: {attempt, host, state, beat, reason} ----

def status_file(path: Path) -> Path:
    return Path(path).parent / f".{Path(path).name}.status.json"


def write_status(path: Path, attempt: str, state: str, beat: int = 0, reason: str = "") -> None:
    body = {"attempt": attempt, "host": socket.gethostname(), "pid": os.getpid(), "state": state, "beat": beat,
            "reason": reason}
    tmp = status_file(path).with_name(f"{status_file(path).name}.{socket.gethostname()}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, status_file(path))


def read_status(path: Path) -> Optional[dict]:
    try:
        return json.loads(status_file(path).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def heartbeat(path: Optional[Path], attempt: str) -> Iterator[None]:
    """'building' with a counter that grows every BEAT_S while the block runs; 'failed' with the reason
    when it raises. A waiting node tells a dead node 0 from a slow one by the counter standing still."""
    if path is None:  # the backend tokenizes inside its training processes: nobody waits
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def beat() -> None:
        count = 0
        while not stop.wait(BEAT_S):
            count += 1
            with contextlib.suppress(OSError):
                write_status(path, attempt, "building", count)

    write_status(path, attempt, "building")
    thread = threading.Thread(target=beat, name="hpc-sft-data-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    except BaseException as exc:
        stop.set()
        thread.join()
        write_status(path, attempt, "failed", reason=one_line(exc))
        raise
    stop.set()
    thread.join()
    write_status(path, attempt, "done")


def one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {' '.join(lines)}"[:500]


def build(path: Path, process) -> Path:
    """Run process(tmp_dir) and publish tmp_dir as `path` with one rename; reuse `path` if already there.
    Node 0 runs it inside heartbeat(), which tells the waiting nodes how it goes."""
    if is_ready(path):
        log.info("data cache hit: %s (processing skipped)", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("processing data into %s", path)
    try:
        faults.pause("DATA_HANG", "data processing hangs")  # tests only: a tokenizer that never returns
        process(str(tmp))
        (tmp / DONE).write_text(json.dumps({"host": socket.gethostname(), "time": time.time()}))
        _publish(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _publish(tmp: Path, path: Path) -> None:
    try:
        os.rename(tmp, path)
    except OSError:
        if not is_ready(path):  # a rename onto an existing dir fails only if another builder won
            raise


def stale_s() -> float:
    return float(os.environ.get("HPC_SFT_DATA_STALE_S", "120"))


def wait(path: Path, timeout_s: float, attempt: str = "local", poll_s: float = 1.0) -> Path:
    """Wait for node 0 to publish `path`. TrainingError with node 0's reason as soon as its build for this
    attempt failed, or when its heartbeat stood still for stale_s(); after timeout_s at the latest."""
    deadline, last, changed = time.monotonic() + timeout_s, None, time.monotonic()
    while not is_ready(path):
        status = read_status(path)
        now = time.monotonic()
        if status is not None and status.get("attempt") == attempt:
            check_builder(status, path, now - changed if status == last else 0.0)
            if status != last:
                last, changed = status, now
        if now > deadline:
            raise TrainingError(f"waited {timeout_s:.0f}s for node 0 to tokenize the data into {path}",
                                "read node 0's log; raise HPC_SFT_DATA_WAIT_S if the data set is very large")
        time.sleep(poll_s)
    log.info("data cache ready: %s", path)
    return path


def check_builder(status: dict, path: Path, still_s: float) -> None:
    """Raise when node 0's build of this attempt failed, or its heartbeat has not moved for stale_s()."""
    host = status.get("host", "node 0")
    if status.get("state") == "failed":
        raise TrainingError(f"node 0 ({host}) failed to tokenize the data: {status.get('reason')}",
                            "read node 0's log (this node stops now instead of waiting)")
    if status.get("state") == "building" and still_s > stale_s():
        raise TrainingError(f"node 0 ({host}) stopped tokenizing the data into {path}: no heartbeat for "
                            f"{still_s:.0f}s (its process died, or its node)",
                            "read node 0's log; the job can be resubmitted")
