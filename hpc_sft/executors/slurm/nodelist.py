"""Expand Slurm node lists such as 'gpu-[01-03,07]' or 'a[1-2],b3' into host names (pure)."""
from __future__ import annotations

from ...errors import ConfigError


def expand_nodelist(text: str) -> list[str]:
    """Every host of a Slurm node list, in order; ConfigError when it cannot be parsed."""
    if not text or not text.strip():
        raise _bad(text, "is empty")
    hosts: list[str] = []
    for group in _split_top_level(text.strip()):
        hosts.extend(_expand_group(text, group))
    return hosts


def _bad(text: str, problem: str) -> ConfigError:
    return ConfigError("SLURM_JOB_NODELIST", f"{text!r} {problem}",
                       "run inside a Slurm allocation (sbatch/srun); check `scontrol show hostnames`")


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets."""
    groups, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth not in (0, 1):
            raise _bad(text, "has unbalanced brackets")
        if ch == "," and depth == 0:
            groups.append(text[start:i])
            start = i + 1
    if depth:
        raise _bad(text, "has unbalanced brackets")
    groups.append(text[start:])
    if any(not g for g in groups):
        raise _bad(text, "has an empty entry")
    return groups


def _expand_group(text: str, group: str) -> list[str]:
    """'n[1-2]-ib[3,5]' -> every combination, left to right."""
    open_at = group.find("[")
    if open_at < 0:
        return [group]
    close_at = group.find("]", open_at)
    prefix, body, rest = group[:open_at], group[open_at + 1:close_at], group[close_at + 1:]
    tails = _expand_group(text, rest) if rest else [""]
    return [prefix + item + tail for item in _expand_ranges(text, body) for tail in tails]


def _expand_ranges(text: str, body: str) -> list[str]:
    """'01-03,7' -> ['01', '02', '03', '7'] (zero padding kept)."""
    items = []
    for part in body.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise _bad(text, f"has a bad range {part!r}")
        if not sep:
            items.append(lo)
            continue
        if int(hi) < int(lo):
            raise _bad(text, f"has a descending range {part!r}")
        items.extend(str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1))
    return items
