"""Feature switchboard of the hpc-sft worker shim; features load only inside ILT workers."""

import os

_OFF = ("", "0", "false", "no", "off")


def flag(name: str) -> bool:
    """True when env var ``name`` is set to a truthy value."""
    return os.environ.get(name, "").strip().lower() not in _OFF


def activate() -> None:
    """Install every feature that the HPC_SFT_* environment variables request."""
    from hpc_sft_shim import jitcache

    jitcache.install()  # always: compile the numba packers once per machine, not at every start
    if flag("HPC_SFT_CPU"):
        from hpc_sft_shim import cpu

        cpu.install()
    if flag("HPC_SFT_EQUAL_MINIBATCHES"):
        from hpc_sft_shim import packing

        packing.install()
    if flag("HPC_SFT_HF_KEYS"):
        from hpc_sft_shim import hf_keys

        hf_keys.install()
    if flag("HPC_SFT_EXACT_RESUME"):
        from hpc_sft_shim import resume

        resume.install()
    if flag("HPC_SFT_EXACT_RESUME") and float(os.environ.get("HPC_SFT_FULL_STATE_EVERY_S") or 0) > 0:
        from hpc_sft_shim import periodic

        periodic.install()
    if flag("HPC_SFT_TRACKING"):
        from hpc_sft_shim import tracking

        tracking.install()
    if os.environ.get("HPC_SFT_BEAT_DIR"):
        from hpc_sft_shim import beats

        beats.install()
    if any(name.startswith("HPC_SFT_FAULT_") for name in os.environ):
        from hpc_sft_shim import faults

        faults.install()
    digest_dir = os.environ.get("HPC_SFT_PARAM_DIGEST_DIR")
    if digest_dir:
        from hpc_sft_shim import digest

        digest.install(digest_dir)
