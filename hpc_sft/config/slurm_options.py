"""SlurmOptions: where a job runs and with what resources; sbatch long-option names with underscores.

One table (FIELDS) defines every option: the dataclass, the checks, DOCS and the recipe reference come from it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Mapping, Optional

from ..container import Container
from ..errors import ConfigError, table_of

TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


@dataclass(frozen=True)
class SlurmField:
    """One [slurm] option. kind: int | str | bool | time | lines | table | container; `low`: an int's least value."""

    name: str
    kind: str
    default: Any
    doc: str
    low: Optional[int] = None

    @property
    def annotation(self) -> Any:
        return {"int": Optional[int] if self.default is None else int, "str": Optional[str], "bool": bool,
                "time": str, "lines": tuple, "table": dict, "container": Optional[Container]}[self.kind]


F = SlurmField
FIELDS: tuple[SlurmField, ...] = (
    F("partition", "str", None, "sbatch --partition (default: the cluster's default partition)"),
    F("nodes", "int", 1, "number of nodes; one task per node; nnodes follows it", low=1),
    F("gpus_per_node", "int", 0, "sbatch --gpus-per-node (0: not passed, e.g. CPU partitions)", low=0),
    F("time", "time", "01:00:00", "time limit, any sbatch format: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S"),
    F("account", "str", None, "sbatch --account"),
    F("qos", "str", None, "sbatch --qos"),
    F("constraint", "str", None, "sbatch --constraint"),
    F("cpus_per_task", "int", None, "sbatch --cpus-per-task", low=1),
    F("mem", "str", None, "sbatch --mem, e.g. \"200G\""),
    F("exclusive", "bool", False, "sbatch --exclusive"),
    F("signal_lead_s", "int", 120, "seconds before the time limit that USR2 arrives: checkpoint, then requeue",
      low=1),
    F("max_requeues", "int", 10, "give up after this many requeues (time limits and preemptions)", low=0),
    F("hang_timeout_s", "int", 1800, "seconds a run may go without progress before the node dumps its stacks, "
      "ends its processes and requeues without the stuck node (start-up and a first save get 4x, a step at "
      "least 10x the longest so far, a save 3x the longest so far; 0: no watchdog)", low=0),
    F("setup", "lines", (), "shell lines run before the task: module load, venv/conda activation, exports"),
    F("container", "container", None, "run training inside a container image: a table with runtime "
      "(\"apptainer\" | \"pyxis\"), image, mounts, env; see [slurm.container] below and docs/containers.md"),
    F("additional", "table", None, "other sbatch options, e.g. { mail_type = \"END\", reservation = \"x\" }"),
    F("folder", "str", None, "job files and logs (default: {ckpt_output_dir}/slurm)"),
)
DOCS = {f.name: f.doc for f in FIELDS}


def _from_value(cls, value: Any):
    """Accept a SlurmOptions, a mapping of its fields, or None; raise ConfigError naming bad keys."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return check(value)
    value = dict(table_of("slurm", value, DOCS, "Slurm option",
                          "pass slurm={'partition': 'gpu', 'nodes': 2, ...}", "SlurmOptions or a dict"))
    if isinstance(value.get("setup"), list):
        value["setup"] = tuple(value["setup"])
    return check(cls(**value))


def _post_init(self) -> None:
    """A container given as a table (a recipe, sft(slurm={...}), a config read back from JSON) becomes the
    validated, frozen Container; errors name slurm.container.KEY."""
    if self.container is not None and not isinstance(self.container, Container):
        object.__setattr__(self, "container", Container.from_value(self.container))


SlurmOptions = make_dataclass(
    "SlurmOptions",
    [(f.name, f.annotation, field(default_factory=dict) if f.kind == "table" else field(default=f.default))
     for f in FIELDS],
    frozen=True,
    namespace={"from_value": classmethod(_from_value), "__post_init__": _post_init,
               "timeout_min": property(lambda self: time_to_minutes(self.time))})
SlurmOptions.__module__ = __name__  # so pickling (submitit) finds it
SlurmOptions.__doc__ = ("Resources of one job (fields: FIELDS). `setup` lines run before the task; "
                        "`additional` passes other sbatch options.")


def check(opts) -> Any:
    """Raise ConfigError for the first bad field, in table order; then the fields checked together."""
    for spec in FIELDS:
        CHECKS[spec.kind](spec, getattr(opts, spec.name))
    if opts.signal_lead_s >= opts.timeout_min * 60:
        raise ConfigError("slurm.signal_lead_s", f"{opts.signal_lead_s}s is not shorter than time={opts.time}",
                          "make the time limit longer than the signal lead")
    return opts


def _check_int_field(spec: SlurmField, val: Any) -> None:
    if val is not None or spec.default is not None:
        _check_int(spec.name, val, spec.low or 0)


def _check_str(spec: SlurmField, val: Any) -> None:
    if val is not None and (not isinstance(val, str) or not val.strip() or not val.isprintable()):
        raise ConfigError(f"slurm.{spec.name}", f"must be a non-empty one-line string, got {val!r}",
                          f"set slurm.{spec.name} without newlines or control characters")


def _check_bool(spec: SlurmField, val: Any) -> None:
    if not isinstance(val, bool):
        raise ConfigError(f"slurm.{spec.name}", f"must be true or false, got {val!r}",
                          f"set slurm.{spec.name} = true or false")


def _check_int(name: str, val: Any, low: int) -> None:
    if isinstance(val, bool) or not isinstance(val, int) or val < low:
        raise ConfigError(f"slurm.{name}", f"must be an integer >= {low}, got {val!r}",
                          f"set slurm.{name} to a whole number >= {low}")


def _check_setup(_spec: SlurmField, setup: Any) -> None:
    if not isinstance(setup, tuple) or not all(isinstance(s, str) for s in setup):
        raise ConfigError("slurm.setup", f"must be a list of shell lines, got {setup!r}",
                          'use setup = ["module load cuda", "source /path/venv/bin/activate"]')


def _check_additional(_spec: SlurmField, extra: Any) -> None:
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


def _check_container(_spec: SlurmField, value: Any) -> None:
    if value is not None:
        Container.from_value(value)


CHECKS = {"int": _check_int_field, "str": _check_str, "bool": _check_bool,
          "time": lambda _spec, val: time_to_minutes(val), "lines": _check_setup, "table": _check_additional,
          "container": _check_container}
