"""[sweep]: a grid or list of [sft]/slurm.KEY values -> named tasks, each one run in its own directory. Pure."""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import ConfigError, HpcSftError, table_of, unknown_key
from .slurm_options import DOCS as SLURM_DOCS

TABLE_KEYS = ("max_parallel", "grid", "list")
SWEEP_FILE = "sweep.json"  # in the sweep's ckpt_output_dir: the tasks, their values and job ids
# Keys a task may not change: where it writes and how it runs are the sweep's.
FIXED = {"ckpt_output_dir": "each task trains into its own folder under ckpt_output_dir",
         "executor": "a sweep is one Slurm job array", "sweep": "a sweep cannot nest",
         "backend": "a sweep trains with one backend (submit one sweep per backend)",
         "slurm": "sweep single options as \"slurm.KEY\"", "slurm.folder": "job files go to the sweep's folder"}
NAME_MAX = 120


@dataclass(frozen=True)
class SweepTask:
    """One combination: its index in the sweep, its folder name, and the values it sets (key -> value)."""

    index: int
    name: str
    values: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={fmt(v)}" for k, v in self.values)


@dataclass(frozen=True)
class Sweep:
    tasks: tuple[SweepTask, ...]
    keys: tuple[str, ...]  # the keys that vary, in table order
    max_parallel: Optional[int] = None  # None: every task may run at once
    sources: tuple[tuple[str, str], ...] = ()  # key -> where it is written: sweep.grid.KEY | sweep.list


def parse(table: Any, where: str = "sweep") -> Sweep:
    """The tasks of a [sweep] table (or sft(sweep={...})): list entries x grid combinations, in order."""
    table_of(where, table, TABLE_KEYS, "sweep key",
             "write [sweep] with [sweep.grid] key = [values...], or pass sweep={'grid': {...}}")
    grid, entries = _grid(table.get("grid"), f"{where}.grid"), _entries(table.get("list"), f"{where}.list")
    if not grid and not entries:
        raise ConfigError(where, "has no tasks", f"add {where}.grid (key = [values]) or {where}.list ([{{...}}])")
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]
    tasks = [{**entry, **combo} for entry in (entries or [{}]) for combo in combos]
    keys = tuple(dict.fromkeys(k for task in tasks for k in task))
    check_distinct(tasks, where)
    width = len(str(len(tasks) - 1))
    sources = {**{k: f"{where}.list" for e in entries for k in e}, **{k: f"{where}.grid.{k}" for k in grid}}
    return Sweep(tuple(SweepTask(i, task_name(i, width, t), tuple(t.items())) for i, t in enumerate(tasks)),
                 keys, _max_parallel(table.get("max_parallel"), f"{where}.max_parallel"), tuple(sources.items()))


def flat(table: Mapping) -> dict:
    """TOML reads `slurm.nodes = [1, 2]` as a table {slurm: {nodes: [1, 2]}}: back to "slurm.nodes"."""
    out = {}
    for key, value in table.items():
        if key == "slurm" and isinstance(value, Mapping):
            out.update((f"slurm.{k}", v) for k, v in value.items())
        else:
            out[key] = value
    return out


def _grid(grid: Any, where: str) -> dict[str, list]:
    if grid is None:
        return {}
    grid = flat(grid) if isinstance(grid, Mapping) else grid
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(where, "must be a non-empty table of key = [values]", "e.g. learning_rate = [1e-5, 2e-5]")
    for key, values in grid.items():
        check_key(key, f"{where}.{key}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.{key}", f"must be a non-empty list, got {values!r}",
                              f"write {key} = [value1, value2]")
    return dict(grid)


def _entries(entries: Any, where: str) -> list[dict]:
    if entries is None:
        return []
    if not isinstance(entries, list) or not entries or not all(isinstance(e, Mapping) and e for e in entries):
        raise ConfigError(where, "must be a non-empty list of non-empty tables",
                          "e.g. list = [{ learning_rate = 1e-5 }, { learning_rate = 2e-5, num_epochs = 3 }]")
    entries = [flat(e) for e in entries]
    for entry in entries:
        for key in entry:
            check_key(key, f"{where}.{key}")
    return entries


def check_key(key: str, where: str) -> None:
    """A sweep key: an [sft] key (or backend field, checked per task), or slurm.KEY with KEY a Slurm option."""
    if key in FIXED:
        raise ConfigError(where, f"cannot be swept: {FIXED[key]}", f"remove {key} from the sweep")
    if key.startswith("slurm."):
        name = key.split(".", 1)[1]
        if name not in SLURM_DOCS:
            raise unknown_key(where, (f"slurm.{n}" for n in SLURM_DOCS if f"slurm.{n}" not in FIXED),
                              "Slurm option")
    elif "." in key or not key:
        raise ConfigError(where, f"{key!r} is neither an [sft] key nor slurm.KEY",
                          "use an [sft] key (learning_rate) or a Slurm option as \"slurm.nodes\"")


def _max_parallel(value: Any, where: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(where, f"must be an integer >= 1, got {value!r}", "e.g. max_parallel = 2")
    return value


def check_distinct(tasks: list[dict], where: str) -> None:
    seen: dict[str, int] = {}
    for index, task in enumerate(tasks):
        key = repr(sorted(task.items(), key=lambda kv: kv[0]))
        if key in seen:
            raise ConfigError(where, f"tasks {seen[key]} and {index} are the same ({task})",
                              "remove the repeated value or list entry")
        seen[key] = index


def fmt(value: Any) -> str:
    """A value as it reads in a task name: 1e-05, 0.0002, 16, true, the last part of a path."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    if isinstance(value, str) and "/" in value:
        return Path(value).name or value
    return str(value)


def task_name(index: int, width: int, values: Mapping[str, Any]) -> str:
    """'03-learning_rate=1e-05-effective_batch_size=16': the index, then each value (safe in a path)."""
    parts = [f"{index:0{width}d}"] + [f"{k}={fmt(v)}" for k, v in values.items()]
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", "-".join(parts))[:NAME_MAX]


def task_values(base: Mapping[str, Any], task: SweepTask, root: Path) -> dict:
    """The flat sft() arguments of one task: the base with the task's values, its own ckpt_output_dir, and a
    tokenized-data cache shared by every task (it is keyed by content, so tasks that tokenize alike share it)."""
    out = {k: v for k, v in base.items() if k != "sweep"}
    slurm = {k.split(".", 1)[1]: v for k, v in task.values if k.startswith("slurm.")}
    out.update((k, v) for k, v in task.values if not k.startswith("slurm."))
    if slurm:
        opts = out.get("slurm")
        out["slurm"] = replace(opts, **slurm) if is_dataclass(opts) else {**(opts or {}), **slurm}
    out["ckpt_output_dir"] = str(root / task.name)
    if out.get("data_output_dir") is None:
        out["data_output_dir"] = str(root / "data")
    return out


def located(sweep: Sweep, exc: HpcSftError, task: SweepTask) -> HpcSftError:
    """A task's error about a swept key, renamed to where the value is written (so a recipe error finds its
    line) and saying which task; errors about the base values stay as they are."""
    key = (getattr(exc, "key", "") or "").split(" ")[0]
    where = dict(sweep.sources).get(key)
    if where is None:
        return exc
    exc.key = where
    exc.args = (f"{where}: task {task.name}: {exc.args[0]}",) + exc.args[1:]
    return exc
