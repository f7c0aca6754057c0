"""The instructlab-training versions the shim's patches were written and tested against (one list)."""

TESTED_ILT_VERSIONS = ("0.16.2",)


def require_tested(feature: str) -> None:
    """RuntimeError naming the feature unless the installed instructlab-training version was tested."""
    from importlib.metadata import version

    installed = version("instructlab-training")
    if installed not in TESTED_ILT_VERSIONS:
        raise RuntimeError(
            f"{feature}: instructlab-training {installed} is installed, but hpc-sft's patches were only "
            f"tested with {', '.join(TESTED_ILT_VERSIONS)}. Fix: pip install "
            f"'instructlab-training=={TESTED_ILT_VERSIONS[-1]}'")
