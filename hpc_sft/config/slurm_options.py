"""SlurmOptions: where a job runs and with what resources; sbatch long-option names with underscores."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..errors import ConfigError, unknown_key

TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of one job. `setup` lines run before the task; `additional` passes other sbatch options."""

    partition: Optional[str] = None
    nodes: int = 1
    gpus_per_node: int = 0
    time: str = "01:00:00"
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    cpus_per_task: Optional[int] = None
    mem: Optional[str] = None
    exclusive: bool = False
    signal_lead_s: int = 120
    max_requeues: int = 10
    setup: tuple[str, ...] = ()
    additional: dict = field(default_factory=dict)
    folder: Optional[str] = None  # default: {ckpt_output_dir}/slurm

    @classmethod
    def from_value(cls, value: Any) -> "SlurmOptions":
        """Accept a SlurmOptions, a mapping of its fields, or None; raise ConfigError naming bad keys."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return check(value)
        if not isinstance(value, Mapping):
            raise ConfigError("slurm", f"must be SlurmOptions or a dict, got {type(value).__name__}",
                              "pass slurm={'partition': 'gpu', 'nodes': 2, ...}")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in value:
            if key not in names:
                raise unknown_key(f"slurm.{key}", (f"slurm.{n}" for n in names), "Slurm option")
        value = dict(value)
        if isinstance(value.get("setup"), list):
            value["setup"] = tuple(value["setup"])
        return check(cls(**value))

    @property
    def timeout_min(self) -> int:
        return time_to_minutes(self.time)


DOCS = {
    "partition": "sbatch --partition (default: the cluster's default partition)",
    "nodes": "number of nodes; one task per node; nnodes follows it",
    "gpus_per_node": "sbatch --gpus-per-node (0: not passed, e.g. CPU partitions)",
    "time": "time limit, any sbatch format: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S",
    "account": "sbatch --account",
    "qos": "sbatch --qos",
    "constraint": "sbatch --constraint",
    "cpus_per_task": "sbatch --cpus-per-task",
    "mem": "sbatch --mem, e.g. \"200G\"",
    "exclusive": "sbatch --exclusive",
    "signal_lead_s": "seconds before the time limit that USR2 arrives: checkpoint, then requeue",
    "max_requeues": "give up after this many requeues (time limits and preemptions)",
    "setup": "shell lines run before the task: module load, venv/conda activation, exports",
    "additional": "other sbatch options, e.g. { mail_type = \"END\", reservation = \"x\" }",
    "folder": "job files and logs (default: {ckpt_output_dir}/slurm)",
}

INT_FIELDS = {"nodes": 1, "gpus_per_node": 0, "signal_lead_s": 1, "max_requeues": 0}
STR_FIELDS = ("partition", "account", "qos", "constraint", "mem", "folder")


def check(opts: SlurmOptions) -> SlurmOptions:
    """Raise ConfigError for the first bad field."""
    for name, low in INT_FIELDS.items():
        _check_int(name, getattr(opts, name), low)
    if opts.cpus_per_task is not None:
        _check_int("cpus_per_task", opts.cpus_per_task, 1)
    for name in STR_FIELDS:
        val = getattr(opts, name)
        if val is not None and (not isinstance(val, str) or not val.strip() or not val.isprintable()):
            raise ConfigError(f"slurm.{name}", f"must be a non-empty one-line string, got {val!r}",
                              f"set slurm.{name} without newlines or control characters")
    if not isinstance(opts.exclusive, bool):
        raise ConfigError("slurm.exclusive", f"must be true or false, got {opts.exclusive!r}", "")
    time_to_minutes(opts.time)
    _check_setup(opts.setup)
    _check_additional(opts.additional)
    if opts.signal_lead_s >= opts.timeout_min * 60:
        raise ConfigError("slurm.signal_lead_s", f"{opts.signal_lead_s}s is not shorter than time={opts.time}",
                          "make the time limit longer than the signal lead")
    return opts


def _check_int(name: str, val: Any, low: int) -> None:
    if isinstance(val, bool) or not isinstance(val, int) or val < low:
        raise ConfigError(f"slurm.{name}", f"must be an integer >= {low}, got {val!r}",
                          f"set slurm.{name} to a whole number >= {low}")


def _check_setup(setup: Any) -> None:
    if not isinstance(setup, tuple) or not all(isinstance(s, str) for s in setup):
        raise ConfigError("slurm.setup", f"must be a list of shell lines, got {setup!r}",
                          'use setup = ["module load cuda", "source /path/venv/bin/activate"]')


def _check_additional(extra: Any) -> None:
    if not isinstance(extra, Mapping):
        raise ConfigError("slurm.additional", f"must be a table of sbatch options, got {extra!r}",
                          'use additional = {mail_type = "END"}')
    for key, val in extra.items():
        if (not re.fullmatch(r"[a-z][a-z0-9_]*", str(key)) or not isinstance(val, (str, int, bool))
                or isinstance(val, str) and not val.isprintable()):
            raise ConfigError(f"slurm.additional.{key}", f"bad sbatch option {key}={val!r}",
                              "use sbatch long option names with underscores and string/number values")


def time_to_minutes(text: Any) -> int:
    """sbatch --time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes (rounded up)."""
    match = TIME_RE.match(str(text)) if isinstance(text, (str, int)) else None
    if not match or isinstance(text, bool):
        raise ConfigError("slurm.time", f"{text!r} is not a Slurm time",
                          "use HH:MM:SS, D-HH:MM:SS or minutes, e.g. time = \"24:00:00\"")
    days, a, b, c = match.groups()
    if days is not None:  # D-H[:M[:S]]
        _check_fields(text, (("hours", a, 23), ("minutes", b, 59), ("seconds", c, 59)))
        secs = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # H:M:S
        _check_fields(text, (("minutes", b, 59), ("seconds", c, 59)))
        secs = int(a) * 3600 + int(b) * 60 + int(c)
    else:  # M or M:S
        _check_fields(text, (("seconds", b, 59),))
        secs = int(a) * 60 + int(b or 0)
    if secs <= 0:
        raise ConfigError("slurm.time", f"{text!r} is zero", "give a positive time limit")
    return -(-secs // 60)


def _check_fields(text: Any, fields) -> None:
    """ConfigError when a minutes/seconds field is over 59 (hours over 23 after a day count)."""
    for what, value, top in fields:
        if value is not None and int(value) > top:
            raise ConfigError("slurm.time", f"{text!r} has {what} = {int(value)} (at most {top})",
                              "use M, M:S, H:M:S, D-H, D-H:M or D-H:M:S with minutes and seconds up to 59 "
                              "(hours up to 23 after a day count), e.g. time = \"1-02:00:00\"")
