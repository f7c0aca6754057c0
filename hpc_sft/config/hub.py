"""Hugging Face model ids: resolved through the local cache (HF_HOME) to a snapshot directory before anything
is queued, so that compute nodes can run offline; `hpc-sft fetch` fills the cache where there is network."""
from __future__ import annotations

import os
import re
from typing import Optional

from ..errors import ConfigError, HpcSftError

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1"}  # what compute nodes run with (a value the user set wins)
MODEL_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def fetch_command(model_id: str, revision: Optional[str] = None) -> str:
    home = os.environ.get("HF_HOME")
    prefix = f"HF_HOME={home} " if home else ""
    return f"{prefix}hpc-sft fetch {model_id}" + (f" --revision {revision}" if revision else "")


def cached_snapshot(model_id: str) -> str:
    """The cached snapshot directory of model_id's main revision; ConfigError (naming the cache and the
    command that fills it) when it is not cached."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model_id, local_files_only=True)
    except Exception as exc:  # LocalEntryNotFoundError, a bad id (HFValidationError), an unreadable cache
        raise ConfigError("model_path", f"{model_id!r} is a Hugging Face model id that is not in the local cache "
                          f"{cache_dir()} ({type(exc).__name__}), and compute nodes run offline "
                          f"({', '.join(f'{k}={v}' for k, v in OFFLINE_ENV.items())})",
                          f"on a machine with network and the same cache, run: {fetch_command(model_id)}") from None


def fetch(model_id: str, revision: Optional[str] = None) -> str:
    """Download model_id (every file of the revision) into the cache; the snapshot directory."""
    from huggingface_hub import snapshot_download

    if not MODEL_ID.match(model_id):
        raise ConfigError("MODEL_ID", f"{model_id!r} is not a Hugging Face model id", "give org/name")
    try:
        return snapshot_download(model_id, revision=revision)
    except Exception as exc:  # no network, offline mode, unknown or gated repository
        raise HpcSftError(f"could not download {model_id} into {cache_dir()}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}",
                          "run this on a machine with network (HF_HUB_OFFLINE unset); for a gated model, log in "
                          "first (hf auth login, or HF_TOKEN)") from None
