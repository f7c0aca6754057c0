"""Load a recipe.toml (+ --set overrides) into a validated SFTConfig; errors name the file, line, key and fix."""
from __future__ import annotations

import contextlib
import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, HpcSftError, SubmitError, did_you_mean
from ..registry import ignores_slurm_options
from .slurm_options import SlurmOptions
from .spec import BY_NAME
from .validate import build_config, split_values

TOP_KEYS = ("executor", "sft", "slurm", "sweep")
PATH_KEYS = ("data_path", "ckpt_output_dir", "data_output_dir", "chat_tmpl_path")
NOT_IN_SFT = {"executor": "put executor at the top of the recipe", "slurm": "use a [slurm] table",
              "sweep": "use a [sweep] table"}
SFT_KEYS = frozenset(BY_NAME) - {"executor", "slurm", "sweep"}
SLURM_KEYS = frozenset(f.name for f in dataclasses.fields(SlurmOptions)) - frozenset(BY_NAME)


@dataclass(frozen=True)
class Recipe:
    path: Path
    data: dict

    @property
    def folder(self) -> Path:
        return self.path.parent


def read(path: str | Path, overrides: tuple[str, ...] = ()) -> Recipe:
    """Parse the TOML and apply `section.key=value` overrides; no validation of values yet."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "recipe file not found", "give the path of a recipe.toml (hpc-sft init makes one)")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"is not valid TOML: {exc}", "fix the syntax at that line") from None
    for item in overrides:
        apply_override(data, item)
    return Recipe(path.resolve(), data)


def apply_override(data: dict, item: str) -> None:
    """'sft.num_epochs=3' or 'executor=slurm': the value is read as TOML, else as a plain string."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item}", "is not key=value", "use e.g. --set sft.num_epochs=3")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    *sections, name = key.strip().split(".")
    target = data
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {item}", f"{section} is not a table", "use section.key=value")
    target[name] = value


def resolve_paths(values: dict, folder: Path) -> dict:
    """Relative paths resolve against the recipe's folder (model_path only when it exists there)."""
    out = dict(values)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str) and not Path(out[key]).expanduser().is_absolute():
            out[key] = str((folder / out[key]).resolve())
    model = out.get("model_path")
    if isinstance(model, str) and not Path(model).is_absolute():
        local = folder / model
        if model.startswith((".", "~")) or local.exists():
            out["model_path"] = str(local.resolve()) if not model.startswith("~") else model
    return out


def sft_values(recipe: Recipe) -> dict:
    """The flat sft() arguments of a recipe (paths resolved, [slurm] attached)."""
    data = recipe.data
    check_structure(data)
    values = resolve_paths(data.get("sft", {}), recipe.folder)
    values["executor"] = data.get("executor", "local")
    if "slurm" in data:
        slurm = dict(data["slurm"])
        if isinstance(slurm.get("folder"), str):
            slurm["folder"] = str((recipe.folder / Path(slurm["folder"]).expanduser()).resolve())
        values["slurm"] = slurm
    if "sweep" in data:
        values["sweep"] = sweep_paths(data["sweep"], recipe.folder)
    return values


def sweep_paths(table, folder: Path):
    """A [sweep] table with relative paths in its values resolved like those in [sft] (the table is
    checked later; what is not a table passes through unchanged for that check to refuse)."""
    if not isinstance(table, dict):
        return table
    out = dict(table)
    if isinstance(out.get("grid"), dict):
        out["grid"] = {k: [resolve_paths({k: v}, folder)[k] for v in vs] if isinstance(vs, list) else vs
                       for k, vs in out["grid"].items()}
    if isinstance(out.get("list"), list):
        out["list"] = [resolve_paths(e, folder) if isinstance(e, dict) else e for e in out["list"]]
    return out


def check_structure(data: dict) -> None:
    """ConfigError for a key in the wrong section, or a [slurm] table the executor would ignore."""
    for key in data:
        if key not in TOP_KEYS:
            raise _misplaced(key, key, "at the top level") or ConfigError(
                key, f"unknown top-level key{did_you_mean(key, TOP_KEYS)}", f"use one of: {', '.join(TOP_KEYS)}")
    for key in ("sft", "slurm", "sweep"):
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(key, "must be a table", f"write [{key}] on its own line")
    for key, fix in NOT_IN_SFT.items():
        if key in data.get("sft", {}):
            raise ConfigError(f"sft.{key}", "does not belong in [sft]", fix)
    for section in ("sft", "slurm"):
        for key in data.get(section, {}):
            error = _misplaced(f"{section}.{key}", key, f"in [{section}]", section)
            if error:
                raise error
    if "slurm" in data and ignores_slurm_options(data.get("executor", "local")):
        raise ConfigError("slurm", "a [slurm] table is given but executor is \"local\", which would ignore it",
                          'set executor = "slurm" at the top of the recipe, or remove the [slurm] table')


def _misplaced(name: str, key: str, where: str, section: str = "") -> ConfigError | None:
    """The error for an [sft] key outside [sft], or a Slurm option outside [slurm] (None: not misplaced)."""
    if key in SFT_KEYS and section != "sft":
        return ConfigError(name, f"is an [sft] key, placed {where}", f"move {key} under [sft]")
    if key in SLURM_KEYS and section != "slurm":
        return ConfigError(name, f"is a Slurm option, placed {where}", f"move {key} under [slurm]")
    return None


def load(path: str | Path, overrides: tuple[str, ...] = ()):
    """Read, resolve and validate a recipe into an SFTConfig; errors carry the file and line."""
    recipe = read(path, overrides)
    with located(recipe):
        return build(recipe)


def build(recipe: Recipe):
    """The validated SFTConfig of a parsed recipe (one without [sweep]: a sweep is planned by pipeline)."""
    values = sft_values(recipe)
    if "sweep" in values:
        raise ConfigError("sweep", "this command takes a recipe of one run", "remove [sweep], or use "
                          "`hpc-sft submit` (it queues the sweep's job arrays; --dry-run shows them)")
    return build_config(*split_values(values))


@contextlib.contextmanager
def located(recipe: Recipe) -> Iterator[None]:
    """Errors about a key raised inside the block carry the recipe's file:line (checks after validation too)."""
    try:
        yield
    except HpcSftError as exc:
        if isinstance(exc, SubmitError):  # about Slurm, not about a line of the recipe
            raise
        raise locate(exc, recipe) from None


def locate(exc: HpcSftError, recipe: Recipe) -> HpcSftError:
    """Prefix the error with file:line of the key it names, when that key is in the file."""
    parts = (getattr(exc, "key", "") or "").split(" ")[0].split(".")
    text, line = recipe.path.read_text(), None
    while parts and not line:  # slurm.additional.KEY in an inline table: the line of slurm.additional
        line = find_line(text, ".".join(parts))
        parts.pop()
    where = f"{recipe.path}:{line}" if line else str(recipe.path)
    exc.args = (f"{where}: {exc.args[0]}",) + exc.args[1:]
    return exc


def find_line(text: str, key: str) -> int | None:
    """1-based line of `key` (or `slurm.key`) in the recipe text, else None."""
    section, _, name = key.rpartition(".")
    section = section or "sft"
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"\s*\[([^\]]+)\]", line)
        if header:
            current = header.group(1).strip()
            if current == key:  # the error is about a whole table
                return number
        elif re.match(rf"\s*{re.escape(name)}\s*=", line) and (current in (section, "") or not name):
            return number
    return None
