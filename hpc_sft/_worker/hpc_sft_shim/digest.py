"""HPC_SFT_PARAM_DIGEST_DIR: each rank writes rank{RANK}.json, a sha256 of its parameters."""

import atexit
import functools
import hashlib
import json
import os

from hpc_sft_shim.hooks import on_import

_captured: dict = {}


def install(out_dir: str) -> None:
    """Capture the model accelerate prepares and write its digest at process exit."""
    on_import("accelerate.accelerator", _wrap_prepare)
    atexit.register(write_digest, out_dir)


def _wrap_prepare(module) -> None:
    original = module.Accelerator.prepare

    @functools.wraps(original)
    def prepare(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        _remember(self, result)
        return result

    module.Accelerator.prepare = prepare


def _remember(accelerator, result) -> None:
    import torch

    for item in result if isinstance(result, tuple) else (result,):
        if isinstance(item, torch.nn.Module):
            _captured["model"] = item
            _captured["accelerator"] = accelerator


def param_digest(model) -> dict:
    """sha256 over name, dtype, shape and exact bytes of every parameter, name-sorted."""
    import torch

    digest, count = hashlib.sha256(), 0
    for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        tensor = param.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(param.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
        count += param.numel()
    return {"sha256": digest.hexdigest(), "param_count": count}


def write_digest(out_dir: str) -> None:
    """Write DIR/rank{RANK}.json for the captured model (nothing if none was prepared)."""
    if "model" not in _captured:
        return
    model = _captured["accelerator"].unwrap_model(_captured["model"])
    rank = int(os.environ.get("RANK", "0"))
    record = {"rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", "1")),
              **param_digest(model)}
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"rank{rank}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(record, fh, sort_keys=True)
    os.replace(path + ".tmp", path)
