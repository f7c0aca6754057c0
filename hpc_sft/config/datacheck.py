"""Check a training data file line by line before any work starts; errors name the file and line."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError

ROLES = ("system", "user", "assistant", "tool", "pretraining")


def check_data_file(path: str | Path, pretraining: bool = False, column: str = "document") -> int:
    """Return the number of samples; raise ConfigError at the first bad line."""
    path = Path(path).expanduser()
    count = answered = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            record = _parse(path, lineno, raw)
            (_check_document if pretraining else _check_messages)(path, lineno, record, column)
            count += 1
            answered += pretraining or _has_answer(record)
    if count == 0:
        raise ConfigError("data_path", f"{path} has no samples", "give a JSONL file with one sample per line")
    if not answered:
        raise ConfigError("data_path", f"{path}: none of its {count} conversations has an assistant turn, so "
                          "training would drop every sample (there is nothing to learn from)",
                          'add {"role": "assistant", "content": "..."} replies, or set is_pretraining=True '
                          "(with block_size) for raw documents")
    return count


def _has_answer(record: dict) -> bool:
    return any(msg.get("role") == "assistant" for msg in record["messages"])


def _where(path: Path, lineno: int) -> str:
    return f"data_path {path}, line {lineno}"


def _parse(path: Path, lineno: int, raw: bytes) -> dict:
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(_where(path, lineno), f"not valid JSON ({exc})",
                          "each line must be one JSON object") from None
    if not isinstance(record, dict):
        raise ConfigError(_where(path, lineno), f"is a JSON {type(record).__name__}, not an object",
                          "each line must be one JSON object")
    return record


def _check_messages(path: Path, lineno: int, record: dict, _column: str) -> None:
    msgs = record.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ConfigError(_where(path, lineno), "has no 'messages' list",
                          'write {"messages": [{"role": "user", "content": "..."}, ...]} '
                          "(or set is_pretraining=True for raw documents)")
    for i, msg in enumerate(msgs):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            raise ConfigError(_where(path, lineno), f"messages[{i}] has no string 'content'",
                              "give every message a role and a content string")
        if msg.get("role") not in ROLES:
            raise ConfigError(_where(path, lineno), f"messages[{i}] has unknown role {msg.get('role')!r}",
                              f"use one of: {', '.join(ROLES)}")


def _check_document(path: Path, lineno: int, record: dict, column: str) -> None:
    if not isinstance(record.get(column), str):
        raise ConfigError(_where(path, lineno), f"has no string field {column!r}",
                          f"put the raw text under {column!r}, or set document_column_name")
