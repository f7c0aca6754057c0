"""Check a Slurm config against the reachable cluster before queueing (partition, node count, time limit)."""
from __future__ import annotations

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


def check_cluster(slurm) -> Optional[str]:
    """Raise ConfigError for what the cluster would refuse; returns the partition checked (None: no cluster)."""
    if shutil.which("scontrol") is None:
        return None
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
    return info["PartitionName"]
