"""Check a Slurm config against the reachable cluster before queueing (partition, node count, time limit)."""
from __future__ import annotations

import re
import shutil
from typing import Optional

from .errors import ConfigError
from .jobs import run
from .slurm_options import time_to_minutes


def partitions() -> dict[str, dict[str, str]]:
    """name -> scontrol's fields for every partition; the default one also under key ''."""
    found: dict[str, dict[str, str]] = {}
    for line in run(["scontrol", "show", "partition", "-o"]).splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "PartitionName" in fields:
            found[fields["PartitionName"]] = fields
            if fields.get("Default") == "YES":
                found[""] = fields
    return found


def seconds(text: str) -> int:
    """A Slurm duration (as scontrol prints GraceTime, e.g. 00:00:30 or 30) in seconds."""
    parts = [int(p) for p in re.split(r"[-:]", text)] if re.fullmatch(r"[\d:-]+", text or "") else [0]
    if "-" in text:
        days, rest = parts[0], parts[1:] + [0] * (3 - len(parts[1:]))
        return days * 86400 + rest[0] * 3600 + rest[1] * 60 + rest[2]
    weights = [1, 60, 3600][: len(parts)][::-1]
    return sum(p * w for p, w in zip(parts, weights))


def timing_warnings(lead_s: int, grace_s: Optional[int], save_s: Optional[float]) -> list[str]:
    """Warnings when the signal lead or the preemption grace time cannot cover one full-state save."""
    if save_s is None:
        return []
    found = []
    if grace_s is not None and grace_s < save_s:
        found.append(f"the partition's GraceTime ({grace_s}s) is shorter than a measured full-state save "
                     f"({save_s:.1f}s): a preempted job will be killed mid-save and lose the work since its last "
                     "checkpoint. Fix: ask your admin for a longer GraceTime, or use a non-preemptible partition")
    if lead_s < 2 * save_s:
        found.append(f"slurm.signal_lead_s={lead_s} is less than twice a measured full-state save ({save_s:.1f}s). "
                     f"Fix: set signal_lead_s to at least {int(2 * save_s) + 1}")
    return found


def check_cluster(slurm, save_s: Optional[float] = None) -> list[str]:
    """Raise ConfigError for what the cluster would refuse; return warnings (none when no cluster answers)."""
    if shutil.which("scontrol") is None:
        return []
    parts = partitions()
    name = slurm.partition or ""
    if name not in parts:
        valid = ", ".join(sorted(p for p in parts if p))
        raise ConfigError("slurm.partition", f"no partition {slurm.partition!r} on this cluster"
                          if name else "no default partition on this cluster", f"use one of: {valid}")
    info = parts[name]
    total = int(info.get("TotalNodes", "0") or 0)
    if slurm.nodes > total:
        raise ConfigError("slurm.nodes", f"{slurm.nodes} nodes asked but partition {info['PartitionName']} has {total}",
                          f"set nodes to at most {total}, or pick a bigger partition")
    max_time = info.get("MaxTime", "UNLIMITED")
    if max_time not in ("UNLIMITED", "INFINITE") and slurm.timeout_min > time_to_minutes(max_time):
        raise ConfigError("slurm.time", f"{slurm.time} exceeds partition {info['PartitionName']}'s MaxTime {max_time}",
                          f"set time to at most {max_time}")
    preemptible = "REQUEUE" in info.get("PreemptMode", "").upper()
    grace = seconds(info.get("GraceTime", "0")) if preemptible else None
    return timing_warnings(slurm.signal_lead_s, grace, save_s)
