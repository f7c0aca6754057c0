"""HPC_SFT_RANK_PREFIX=1: every line a torchrun worker writes to stdout/stderr starts with `[rankR] `."""
import os
import sys


class Prefixed:
    """A text stream that puts `prefix` before every line written through it (the rest passes through)."""

    def __init__(self, stream, prefix: str) -> None:
        self._stream, self._prefix, self._line_start = stream, prefix, True

    def write(self, text: str) -> int:
        pieces = []
        for piece in text.splitlines(keepends=True):
            if self._line_start:
                pieces.append(self._prefix)
            pieces.append(piece)
            self._line_start = piece.endswith(("\n", "\r"))
        self._stream.write("".join(pieces))
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def install() -> None:
    """In a torchrun worker (RANK set by torchrun): prefix its Python-level stdout and stderr with its global
    rank, so that a node's log (and `hpc-sft logs --all`) says which rank wrote each line."""
    rank = os.environ.get("RANK")
    if os.environ.get("HPC_SFT_RANK_PREFIX") != "1" or rank is None or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        if stream is not None and not isinstance(stream, Prefixed):
            setattr(sys, name, Prefixed(stream, f"[rank{rank}] "))
