"""Check a Slurm config against the reachable cluster before queueing (partition, node count, time limit)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from typing import Mapping, Optional

from ...config.slurm_options import time_to_minutes
from ...errors import ConfigError, SubmitError, with_fix
from .client import fields, run
from .env import without_outer_job


def parse_partitions(text: str) -> dict[str, dict[str, str]]:
    """name -> scontrol's fields for every partition of `scontrol show partition -o`; the default one also under
    key ''. Pure."""
    found: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        part = fields(line)
        if "PartitionName" in part:
            found[part["PartitionName"]] = part
            if part.get("Default") == "YES":
                found[""] = part
    return found


def partitions() -> dict[str, dict[str, str]]:
    return parse_partitions(run(["scontrol", "show", "partition", "-o"]))


# sinfo node states (the flag characters *~#!%$@^- stripped) in which a node can start a job now or soon
USABLE_STATES = frozenset({"idle", "mixed", "allocated", "completing", "planned", "reserved"})


def node_states(text: str, partition: str) -> dict[str, str]:
    """node -> state in `partition` (the default partition: '') from `sinfo -h -N -o '%N|%P|%T'`. Pure."""
    found = {}
    for line in text.splitlines():
        node, part, state = (line.split("|") + ["", ""])[:3]
        if part.rstrip("*") == partition or (not partition and part.endswith("*")):
            found[node] = state.rstrip("*~#!%$@^-")
    return found


def idle_warning(states: dict[str, str], partition: str, nodes: int) -> list[str]:
    """A warning when fewer nodes of the partition can run jobs than the job asks for (it would wait). Pure."""
    usable = [n for n, state in states.items() if state in USABLE_STATES]
    if not states or len(usable) >= nodes:
        return []
    counts = ", ".join(f"{n} {state}" for state, n in sorted(Counter(states.values()).items()))
    return [with_fix(f"partition {partition or '(default)'} has {len(usable)} node(s) that can run jobs now "
                     f"({counts}) but the job asks for {nodes}: it will wait in the queue until enough come back",
                     "ask your admin about the nodes (`sinfo -R` says why), or pick another partition")]


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
        found.append(with_fix(f"the partition's GraceTime ({grace_s}s) is shorter than a measured full-state save "
                              f"({save_s:.1f}s): a preempted job will be killed mid-save and lose the work since "
                              "its last checkpoint",
                              "ask your admin for a longer GraceTime, or use a non-preemptible partition"))
    if lead_s < 2 * save_s:
        found.append(with_fix(f"slurm.signal_lead_s={lead_s} is less than twice a measured full-state save "
                              f"({save_s:.1f}s)", f"set signal_lead_s to at least {int(2 * save_s) + 1}"))
    return found


def disk_warnings(ckpt_dir, state_bytes: Optional[int], keep: int) -> list[str]:
    """A warning when the checkpoint filesystem has no room for the next full state next to the kept ones
    (state_bytes: the size of one this run saved; None: nothing measured, nothing said)."""
    if not state_bytes:
        return []
    folder = os.path.abspath(os.path.expanduser(str(ckpt_dir)))
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    free = shutil.disk_usage(folder).free
    if free >= 2 * state_bytes:  # the one being written, and the older one deleted only after it
        return []
    gib = 1 << 30
    return [with_fix(f"{folder} has {free / gib:.1f} GiB free, but one full state of this run takes "
                     f"{state_bytes / gib:.1f} GiB and a save needs room for a new one before an older one goes "
                     f"(keep_full_states={keep})", "free space there, or lower keep_full_states (0 keeps every one)")]


NO_CLIENT = with_fix("Slurm's client commands ({missing}) are not on PATH",
                     "run this on a Slurm login node (or `module load slurm` first), or use executor = \"local\" to "
                     "train here")
NOT_USABLE = with_fix("Slurm is installed here but not usable: {why}",
                      "run this on a login node of your cluster, or set SLURM_CONF to its slurm.conf (or ask your "
                      "admin whether slurmctld is up); or use executor = \"local\"")


def client_problem() -> Optional[str]:
    """Why Slurm cannot take a job from this shell (one line with the fix), or None when it can."""
    missing = [cmd for cmd in ("sbatch", "srun", "scontrol") if shutil.which(cmd) is None]
    if missing:
        return NO_CLIENT.format(missing=", ".join(missing))
    conf = os.environ.get("SLURM_CONF")
    if conf and not os.path.isfile(conf):  # Slurm itself would retry for a minute before saying so
        return NOT_USABLE.format(why=f"SLURM_CONF={conf} is not a file")
    try:
        proc = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return NOT_USABLE.format(why="`scontrol ping` did not answer in 20s (no controller reachable)")
    if proc.returncode != 0 or "DOWN" in proc.stdout:
        return NOT_USABLE.format(why=_reason(proc.stderr or proc.stdout))
    return None


def _reason(text: str) -> str:
    """The one telling line of a Slurm client's error output (its fatal line, else its last line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip("* \n") and not line.startswith("Try ")]
    telling = [line for line in lines if ": fatal: " in line or " is DOWN" in line]
    return (telling or lines or ["no answer"])[0]


def test_only(script: str, additional: Mapping[str, object]) -> None:
    """Slurm's own `sbatch --test-only` on the script; a refusal is a ConfigError naming the option. Queues nothing."""
    refusal = _test_only(script)
    if refusal is None:
        return
    for key in additional:
        if f"--{key.replace('_', '-')}" in refusal or _test_only(_without(script, key)) is None:
            raise ConfigError(f"slurm.additional.{key}", f"refused by sbatch --test-only: {refusal}",
                              "use an sbatch long option name with underscores and a value sbatch accepts "
                              "(`sbatch --help`), or remove it")
    raise ConfigError("slurm", f"sbatch --test-only refused the job: {refusal}",
                      "check the [slurm] options (partition, account, qos, nodes, time, constraint)")


def _test_only(script: str) -> Optional[str]:
    try:
        with without_outer_job():
            proc = subprocess.run(["sbatch", "--test-only"], input=script, capture_output=True, text=True,
                                  timeout=60)
    except subprocess.TimeoutExpired:
        raise SubmitError("sbatch --test-only did not answer in 60s; nothing was queued",
                          "check that slurmctld is up (scontrol ping)") from None
    return None if proc.returncode == 0 else _reason_lines(proc.stderr or proc.stdout)


def _reason_lines(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Try ")]
    return "; ".join(lines) or "no reason given"


def _without(script: str, key: str) -> str:
    flag = f"#SBATCH --{key.replace('_', '-')}"
    return "\n".join(line for line in script.splitlines() if line != flag and not line.startswith(flag + "="))


def check_cluster(slurm, save_s: Optional[float] = None) -> list[str]:
    """Raise ConfigError for what the cluster would refuse; return warnings (none when no cluster answers)."""
    if client_problem() is not None:
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
    states = node_states(run(["sinfo", "-h", "-N", "-o", "%N|%P|%T"]), info["PartitionName"])
    return timing_warnings(slurm.signal_lead_s, grace, save_s) + idle_warning(states, name, slurm.nodes)
