"""The training settings a ckpt_output_dir was trained with: a rerun that would change them is refused."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from .layout import PROGRESS, SETTINGS_FILE

# sft() parameters that do not change the trajectory: resources, placement, which extra files are written.
FREE = frozenset({"data_output_dir", "save_samples", "checkpoint_at_epoch", "accelerate_full_state_at_epoch",
                  "nproc_per_node", "nnodes", "node_rank", "rdzv_id", "rdzv_endpoint", "executor", "slurm",
                  "device", "settings_changed", "data_path", "model_path",
                  "full_state_every_min", "keep_full_states", "tracking"})
SAMPLE = 1 << 20  # bytes read from each end of the data file for its fingerprint


def data_fingerprint(path: str) -> str:
    """size + sha256 of the first and last MiB: cheap on a login node, changes when the data is replaced."""
    path = Path(path).expanduser()
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(SAMPLE))
        if size > SAMPLE:
            fh.seek(max(SAMPLE, size - SAMPLE))
            digest.update(fh.read(SAMPLE))
    return f"{size}:{digest.hexdigest()[:16]}"


def settings(config, free_kwargs: frozenset = frozenset()) -> dict[str, Any]:
    """The trajectory-relevant settings of a config, as plain JSON values."""
    from ..config.spec import PARAMS

    out = {p.name: getattr(config, p.name) for p in PARAMS if p.name not in FREE}
    out["model"] = os.path.abspath(os.path.expanduser(config.model_path))
    out["data"] = data_fingerprint(config.data_path)
    out.update({f"{k}": v for k, v in sorted(config.backend_kwargs.items()) if k not in free_kwargs})
    return json.loads(json.dumps(out, default=str))


def has_progress(ckpt: Path) -> bool:
    return any(any(Path(ckpt).glob(pattern)) for pattern in PROGRESS)


def recorded(ckpt: Path) -> Optional[dict]:
    try:
        return json.loads((Path(ckpt) / SETTINGS_FILE).read_text())["settings"]
    except (OSError, ValueError, KeyError):
        return None


def changes(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every setting that differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {_show(old.get(k))} -> {_show(new.get(k))}" for k in keys if old.get(k) != new.get(k)]


def _show(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)


def check(config, free_kwargs: frozenset = frozenset()) -> None:
    """Refuse a rerun into a ckpt_output_dir whose progress was trained with other settings."""
    ckpt = Path(config.ckpt_output_dir).expanduser()
    old = recorded(ckpt)
    if old is None or not has_progress(ckpt) or config.settings_changed == "continue":
        return
    diff = changes(old, settings(config, free_kwargs))
    if diff:
        raise ConfigError("ckpt_output_dir", f"{ckpt} holds a run trained with other settings ({'; '.join(diff)}); "
                          "resuming would mix them", "to start over, choose a new ckpt_output_dir or remove this "
                          "one; to continue this run with the new settings on purpose, set "
                          "settings_changed = \"continue\"")


def record(config, free_kwargs: frozenset = frozenset()) -> None:
    """Write the settings this run trains with (atomically; the previous ones are kept as 'before')."""
    ckpt = Path(config.ckpt_output_dir).expanduser()
    ckpt.mkdir(parents=True, exist_ok=True)
    new = settings(config, free_kwargs)
    old = recorded(ckpt)
    if old == new:
        return
    body = {"settings": new, **({"before": old} if old is not None else {})}
    tmp = ckpt / f".{SETTINGS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
    os.replace(tmp, ckpt / SETTINGS_FILE)
