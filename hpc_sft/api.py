"""sft(): the one-call entry point; its signature is generated from hpc_sft.config.spec."""
from __future__ import annotations

from typing import Any, Mapping

from . import pipeline
from .config.spec import KWARGS_NAME, PARAMS, signature
from .errors import ConfigError

SIGNATURE = signature()


def run_sft(values: Mapping[str, Any], backend=None) -> Any:
    """Validate, plan, check and run/submit one sft() call given as a flat mapping (hpc_sft.pipeline); with
    `sweep`, every task of it (a SweepJob: one handle per task)."""
    if values.get("sweep") is not None:
        return pipeline.run_sweep(*pipeline.validate_sweep(values))
    return pipeline.run(pipeline.validate(values), backend)


def sft(*args: Any, **kwargs: Any) -> Any:
    try:
        bound = SIGNATURE.bind(*args, **kwargs)
    except TypeError as exc:
        raise ConfigError("sft()", str(exc), "pass model_path, data_path and ckpt_output_dir") from None
    values = dict(bound.arguments)
    values.update(values.pop(KWARGS_NAME, {}))
    return run_sft(values)


sft.__signature__ = SIGNATURE
sft.__doc__ = (
    "Supervised fine-tuning, training_hub-compatible, locally (executor='local') or on Slurm "
    "(executor='slurm').\n\nReturns a TrainingResult (local) or a SlurmJob handle (slurm); with sweep=..., a "
    "SweepJob (one SlurmJob per task).\n\nParameters:\n"
    + "\n".join(f"    {p.name}: {p.doc}" for p in PARAMS)
    + "\n    **backend_kwargs: the backend's own fields (checked; unknown ones are an error)."
)
