"""hpc-sft start-up shim: patches instructlab-training workers when HPC_SFT_* vars ask."""

import os
import sys

_FEATURE_VARS = ("HPC_SFT_CPU", "HPC_SFT_PARAM_DIGEST_DIR")
_WORKER_SCRIPT = "/instructlab/training/main_ds.py"


def _is_ilt_worker() -> bool:
    argv = getattr(sys, "argv", None) or [""]
    return os.path.abspath(argv[0]).replace(os.sep, "/").endswith(_WORKER_SCRIPT)


def _activate() -> None:
    if not any(os.environ.get(v) for v in _FEATURE_VARS) or not _is_ilt_worker():
        return
    from hpc_sft_shim import activate

    activate()


def _chain() -> None:
    from hpc_sft_shim.chain import run_next_sitecustomize

    run_next_sitecustomize(os.path.dirname(os.path.abspath(__file__)))


try:
    _activate()
finally:
    _chain()
