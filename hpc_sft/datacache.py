"""Tokenize the training data once per content (node 0 builds, atomically publishes; other nodes wait)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from .errors import TrainingError

log = logging.getLogger("hpc_sft.data")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt")
DONE = "hpc_sft_done.json"


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


def build(path: Path, process) -> Path:
    """Run process(tmp_dir) and publish tmp_dir as `path` with one rename; reuse `path` if already there."""
    if is_ready(path):
        log.info("data cache hit: %s (processing skipped)", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("processing data into %s", path)
    try:
        process(str(tmp))
        (tmp / DONE).write_text(json.dumps({"host": socket.gethostname(), "time": time.time()}))
        os.rename(tmp, path)
    except OSError:
        if not is_ready(path):  # a rename onto an existing dir fails only if another builder won
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def wait(path: Path, timeout_s: float, poll_s: float = 1.0) -> Path:
    """Wait for node 0 to publish `path`; TrainingError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not is_ready(path):
        if time.monotonic() > deadline:
            raise TrainingError(f"waited {timeout_s:.0f}s for node 0 to tokenize the data into {path}. Fix: read "
                                "node 0's log; raise HPC_SFT_DATA_WAIT_S if the data set is very large")
        time.sleep(poll_s)
    log.info("data cache ready: %s", path)
    return path
