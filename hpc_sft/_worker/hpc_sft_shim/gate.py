"""The instructlab-training versions the shim's patches were tested against, and the one override (one list,
one rule: the parent's pre-flight check and the workers' patches both ask here)."""

import os

TESTED_ILT_VERSIONS = ("0.16.2",)
OVERRIDE_ENV = "HPC_SFT_ALLOW_UNTESTED_BACKEND"


def untested(installed: str) -> bool:
    """True when `installed` is not a tested version and the override is not set."""
    return installed not in TESTED_ILT_VERSIONS and not os.environ.get(OVERRIDE_ENV, "").strip()


def require_tested(feature: str) -> None:
    """RuntimeError naming the feature unless the installed instructlab-training version was tested (or the
    override is set: torchrun workers inherit it from the parent's environment)."""
    from importlib.metadata import version

    installed = version("instructlab-training")
    if untested(installed):
        raise RuntimeError(
            f"{feature}: instructlab-training {installed} is installed, but hpc-sft's patches were only "
            f"tested with {', '.join(TESTED_ILT_VERSIONS)}. Fix: pip install "
            f"'instructlab-training=={TESTED_ILT_VERSIONS[-1]}' (or set {OVERRIDE_ENV}=1 at your own risk)")
