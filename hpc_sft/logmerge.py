"""`hpc-sft logs JOB --all`: every node's stdout and stderr as one stream, in time order, each line prefixed. Pure."""
from __future__ import annotations

import re
from typing import Iterable

STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:,\d{3})?")  # logging's, submitit's, hpc-sft's lines


def stamped(lines: Iterable[str]) -> list[tuple[str, int, str]]:
    """(time stamp, line number, line): a line without a stamp takes the one before it in the same file, so that
    tracebacks and multi-line blocks stay together and in place."""
    out, last = [], ""
    for number, line in enumerate(lines):
        found = STAMP.search(line)
        if found:
            last = found.group(0) if "," in found.group(0) else found.group(0) + ",000"
        out.append((last, number, line))
    return out


def merge(streams: dict[str, str]) -> list[str]:
    """Lines of every stream (label -> text), ordered by time stamp, then by label and line; prefixed with
    '[label] '."""
    keyed = [(stamp, label, number, line) for label, text in streams.items()
             for stamp, number, line in stamped(text.splitlines())]
    return [f"[{label}] {line}" for _, label, _, line in sorted(keyed)]


def label(node: int, stderr: bool) -> str:
    return f"node{node}{' err' if stderr else ''}"
