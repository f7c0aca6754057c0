"""Turn raw sft() arguments into a validated SFTConfig, or raise an error naming the key and the fix."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from .. import registry
from ..errors import ConfigError, MissingPathError, unknown_key
from .datacheck import check_data_file
from .slurm_options import SlurmOptions
from .spec import BY_NAME, KINDS, KWARGS_NAME, PARAMS, Param, SFTConfig

ENDPOINT_RE = re.compile(r"^[A-Za-z0-9._\-\[\]:]+:\d{1,5}$")
# Set by the Slurm executor on each node; a user value would break multi-node runs.
SLURM_DERIVED = ("node_rank", "rdzv_id", "rdzv_endpoint")


def check_type(p: Param, value: Any) -> None:
    """Raise ConfigError unless value fits the parameter's kind and range."""
    if value is None:
        if p.positional:
            raise ConfigError(p.name, "is required", f"pass {p.name}=...")
        return
    types = KINDS[p.kind][0]
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        want = " or ".join(t.__name__ for t in types)
        raise ConfigError(p.name, f"must be {want}, got {type(value).__name__} {value!r}",
                          f"give {p.name} a {want} value")
    if p.kind == "nproc" and isinstance(value, str) and value != "gpu":
        raise ConfigError(p.name, f"must be an int or 'gpu', got {value!r}", "use e.g. nproc_per_node=8")
    if p.choices and value not in p.choices:
        raise ConfigError(p.name, f"invalid value {value!r}", f"use one of: {', '.join(p.choices)}")
    _check_bound(p, value)


def _check_bound(p: Param, value: Any) -> None:
    if isinstance(value, str) or not p.bound:
        return
    if p.bound == "positive" and not value > 0:
        raise ConfigError(p.name, f"must be > 0, got {value!r}", f"set {p.name} to a positive number")
    if p.bound == "nonneg" and not value >= 0:
        raise ConfigError(p.name, f"must be >= 0, got {value!r}", f"set {p.name} to 0 or more")


def check_cross(v: Mapping[str, Any], kwargs: Mapping[str, Any]) -> None:
    """Rules that involve more than one parameter."""
    if v["is_pretraining"] and v["block_size"] is None:
        raise ConfigError("block_size", "is required when is_pretraining=True",
                          "set block_size (tokens per block, e.g. 2048)")
    if v["rdzv_endpoint"] and kwargs.get("master_addr"):
        raise ConfigError("rdzv_endpoint", "and master_addr are both set; torchrun takes one or the other",
                          "keep rdzv_endpoint (recommended) and drop master_addr/master_port")
    if v["rdzv_endpoint"] and not ENDPOINT_RE.match(v["rdzv_endpoint"]):
        raise ConfigError("rdzv_endpoint", f"{v['rdzv_endpoint']!r} is not host:port",
                          "use e.g. rdzv_endpoint='node001:29500'")
    nnodes, rank = v["nnodes"] or 1, v["node_rank"]
    if rank is not None and rank >= nnodes:
        raise ConfigError("node_rank", f"{rank} is not below nnodes={nnodes}",
                          f"use a node_rank from 0 to {nnodes - 1}")
    if not registry.ignores_slurm_options(v["executor"]):
        _check_slurm_conflicts(v)
    elif v["slurm"] is not None:
        raise ConfigError("slurm", f"is given but executor is {v['executor']!r}, which would ignore it",
                          "pass executor='slurm' to submit a Slurm job, or drop slurm=...")


def _check_slurm_conflicts(v: Mapping[str, Any]) -> None:
    for key in SLURM_DERIVED:
        if v[key] is not None:
            raise ConfigError(key, f"is derived on each compute node when executor={v['executor']!r}",
                              f"remove {key}; hpc-sft sets it from the Slurm allocation")
    for key in ("accelerate_full_state_at_epoch", "checkpoint_at_epoch"):
        if v[key] is False:
            raise ConfigError(key, f"must stay on with executor={v['executor']!r}: resuming needs the "
                              "end-of-epoch full state", f"remove {key} = false")
    if registry.EXECUTORS[v["executor"]].allocates:
        _check_gpus(v["device"], v["slurm"])
    nodes = v["slurm"].nodes
    if v["nnodes"] is not None and v["nnodes"] != nodes:
        raise ConfigError("nnodes", f"is {v['nnodes']} but slurm.nodes is {nodes}",
                          "set only slurm.nodes (nnodes follows the allocation)")


GPU_OPTIONS = ("gres", "gpus", "gpus_per_task", "gpus_per_socket", "tres_per_node")


def _check_gpus(device, slurm) -> None:
    """device='cuda' on Slurm needs GPUs in the allocation."""
    if device == "cuda" and slurm.gpus_per_node == 0 and not set(GPU_OPTIONS) & set(slurm.additional):
        raise ConfigError("slurm.gpus_per_node", "is 0 but device is 'cuda': the job would get no GPU",
                          'set slurm.gpus_per_node to the GPUs of one node (e.g. 8), or use device = "cpu"')


def check_paths(v: Mapping[str, Any]) -> None:
    """FileNotFoundError for missing local paths (a hub id org/name is allowed for model_path); ConfigError for
    a model directory without config.json and an output folder that cannot be written. Creates nothing."""
    if looks_local(v["model_path"]):
        check_model_dir(v["model_path"])
    if not os.path.isfile(os.path.expanduser(v["data_path"])):
        raise MissingPathError("data_path", v["data_path"], "give an existing JSONL file")
    for key in ("ckpt_output_dir", "data_output_dir"):
        if v[key]:
            check_writable_dir(key, v[key])


def check_model_dir(path: str) -> None:
    """A local model_path must be a directory holding config.json."""
    folder = Path(path).expanduser()
    if folder.is_file():
        raise ConfigError("model_path", f"{path} is a file, not a model directory",
                          "give the directory that holds config.json, the weights and the tokenizer")
    if not folder.is_dir():
        raise MissingPathError("model_path", path, MODEL_FIX)
    if not (folder / "config.json").is_file():
        raise ConfigError("model_path", f"{path} has no config.json, so it is not a Hugging Face model directory",
                          MODEL_FIX)


MODEL_FIX = "give a local model directory (config.json inside) or a hub id org/name"
TOKENIZER_FILES = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"), ("tokenizer_config.json",))


def check_tokenizer(path: str) -> None:
    """A local model directory must hold a tokenizer (training would fail inside transformers without one)."""
    folder = Path(path).expanduser()
    if not looks_local(path) or not folder.is_dir():
        return
    if not any(all((folder / name).is_file() for name in group) for group in TOKENIZER_FILES):
        raise ConfigError("model_path", f"{path} has no tokenizer files (tokenizer.json, tokenizer.model, "
                          "vocab.json + merges.txt, or tokenizer_config.json)",
                          "save the tokenizer next to the model (tokenizer.save_pretrained(model_dir)), or copy "
                          "those files from the model's original snapshot")


def check_writable_dir(key: str, path: str) -> None:
    """ConfigError unless `path` is a writable directory or can be created (checked on the nearest existing
    ancestor with os.access; nothing is created)."""
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(key, f"{target} is an existing file, not a directory",
                          f"choose a directory for {key}, or move that file away")
    ancestor = next(p for p in (target, *target.parents) if p.exists())
    if not ancestor.is_dir():
        raise ConfigError(key, f"{target} cannot be created: {ancestor} is a file",
                          f"choose a {key} whose parent folders are directories")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        what = "is not writable" if ancestor == target else f"cannot be created: {ancestor} is not writable"
        raise ConfigError(key, f"{target} {what} by this user",
                          f"choose a {key} you can write to (on the shared file system), or get write access")


def looks_local(path: str) -> bool:
    """True unless `path` reads like a hub id ('org/name' or 'name')."""
    if path.startswith(("/", ".", "~")) or path.count("/") > 1:
        return True
    return os.path.exists(os.path.expanduser(path))


def split_values(values: Mapping[str, Any]) -> tuple[dict, dict]:
    """(sft() parameters, backend kwargs) from one flat mapping."""
    named = {k: v for k, v in values.items() if k in BY_NAME}
    return named, {k: v for k, v in values.items() if k not in BY_NAME}


def build_config(values: Mapping[str, Any], backend_kwargs: Mapping[str, Any]) -> SFTConfig:
    """Validate everything (types, ranges, backend fields, paths, data) and return the SFTConfig."""
    unknown = set(values) - set(BY_NAME)
    if unknown:
        raise unknown_key(sorted(unknown)[0], BY_NAME, "sft() parameter")
    v = {p.name: values.get(p.name, p.default) for p in PARAMS}
    for p in PARAMS:
        if p.kind != "slurm":
            check_type(p, v[p.name])
    v["slurm"] = v["slurm"] if registry.ignores_slurm_options(v["executor"]) else SlurmOptions.from_value(v["slurm"])
    backend_cls = registry.backend_class(v["backend"])
    backend_kwargs = dict(backend_kwargs)
    backend_cls.check_kwargs(backend_kwargs)
    check_cross(v, backend_kwargs)
    backend_cls.check_required(v)
    config = SFTConfig(**v, **{KWARGS_NAME: backend_kwargs})
    backend_cls.check_static(config)
    check_paths(v)
    check_data_file(v["data_path"], pretraining=bool(v["is_pretraining"]),
                    column=v["document_column_name"] or "document")
    return config
