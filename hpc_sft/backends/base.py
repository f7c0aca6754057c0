"""Backend: the base every training backend implements (fields it accepts, required values, one run)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Optional

from ..errors import ConfigError, unknown_key

if TYPE_CHECKING:
    from ..requeue import StateFacts


class Backend(ABC):
    """A training library behind sft(). Class-level checks run on the login node without importing it."""

    name: ClassVar[str]
    #: extra keyword arguments the backend accepts (its own config fields)
    kwarg_fields: ClassVar[frozenset[str]] = frozenset()
    #: sft() parameters this backend needs set, with an example value for the error message
    required: ClassVar[Mapping[str, Any]] = {}
    #: backend field -> the sft() parameter to use instead
    aliases: ClassVar[Mapping[str, str]] = {}
    #: True when the backend tokenizes ahead of training (process_data); on Slurm node 0 then builds a
    #: shared data cache once. False: the backend tokenizes inside its own training processes.
    pretokenizes: ClassVar[bool] = False
    #: backend fields that do not change what is trained (logging, worker counts): a rerun may change them
    free_kwargs: ClassVar[frozenset[str]] = frozenset()
    #: experiment trackers the backend's own loggers write to (sft()'s `tracking`; docs/tracking.md)
    trackers: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_kwargs(cls, kwargs: Mapping[str, Any]) -> None:
        """Unknown keyword arguments are an error listing the valid ones (backends often drop them)."""
        for key in kwargs:
            if key in cls.aliases:
                raise ConfigError(key, f"is set through sft()'s {cls.aliases[key]}",
                                  f"use {cls.aliases[key]} instead of {key}")
            if key not in cls.kwarg_fields:
                from ..config.spec import BY_NAME

                raise unknown_key(key, cls.kwarg_fields, f"{cls.name} backend field", hints=BY_NAME)

    @classmethod
    def check_required(cls, values: Mapping[str, Any]) -> None:
        for key, example in cls.required.items():
            if values.get(key) is None:
                raise ConfigError(key, f"is required by the {cls.name} backend", f"set {key}, e.g. {key}={example}")

    @classmethod
    def check_static(cls, config) -> None:
        """Pure checks of a built config that need no backend import (run on dry runs too). Subclasses call
        super() (the trackers asked for must be ones this backend supports)."""
        from ..tracking import check_supported

        check_supported(config.tracking, cls.trackers, cls.name)

    def check_values(self, config) -> None:
        """Full check of backend values against the backend's own classes (may import it; not on dry runs).
        Subclasses call super() (the packages of the trackers asked for are installed)."""
        from ..tracking import check_installed

        check_installed(config.tracking)

    def tracking_env(self, config) -> dict[str, str]:
        """Environment variables for this run's training processes that make the trackers asked for continue
        one run across requeues (only those the user has not set; creates the W&B run id on the first start).
        Compute side, before training starts; ConfigError (with the pip command) when a package is missing."""
        from .. import tracking

        tracking.check_installed(config.tracking)
        return tracking.env(config.tracking, config.ckpt_output_dir)

    @abstractmethod
    def execute_training(self, config, launch) -> None:
        """Run training for one node with this launch layout; raise TrainingError on failure."""

    def local_processes(self, launch) -> int:
        """How many training processes this backend starts on one node for `launch` (0: it trains inside the
        calling process, which the hang watchdog cannot end). Compute side; may import torch."""
        if isinstance(launch.nproc_per_node, int):
            return launch.nproc_per_node
        import torch

        return max(1, torch.cuda.device_count()) if launch.device == "cuda" else 1

    def process_data(self, config, output_dir: str) -> None:
        """Tokenize config.data_path into output_dir (only backends with pretokenizes = True)."""
        raise NotImplementedError(f"the {self.name} backend tokenizes inside its training processes")

    def tidy_checkpoints(self, ckpt_dir: Path, say: Callable[[str], None]) -> None:
        """Before training starts: repair or set aside what an interrupted save left behind."""

    @classmethod
    def newest_checkpoint(cls, ckpt_dir: Path) -> Optional[Path]:
        """The newest checkpoint this backend keeps in its own format in ckpt_dir, for `hpc-sft status` before
        any hf_format/samples_N exists (None: none, or the backend keeps none). No heavy imports."""
        return None

    @classmethod
    def measured_save(cls, ckpt_dir: Path) -> tuple[Optional[float], Optional[int]]:
        """(longest checkpoint save in seconds, largest checkpoint in bytes) this backend measured in ckpt_dir
        (None: nothing measured): the Slurm pre-submit checks compare them with the warning-signal lead and
        the free space; `hpc-sft status` shows the time. No heavy imports."""
        return None, None

    @abstractmethod
    def progress(self, config) -> tuple[Optional[StateFacts], Optional[Path]]:
        """Facts of the newest complete resumable state on disk (None if none) and its path: the
        finish-or-requeue decision reads them after each run."""
