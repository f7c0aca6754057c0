"""Algorithm, SFTAlgorithm and create_algorithm: the training_hub-style class API over one spec."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Type

from . import registry
from .backends.base import Backend
from .config.spec import PARAMS


class Algorithm(ABC):
    """A training algorithm bound to a backend."""

    def __init__(self, backend: Backend, **kwargs: Any) -> None:
        self.backend = backend
        self.config = kwargs

    @abstractmethod
    def train(self, **kwargs: Any) -> Any: ...

    @abstractmethod
    def get_required_params(self) -> Dict[str, Type]: ...

    @abstractmethod
    def get_optional_params(self) -> Dict[str, Type]: ...


_TYPES = {"path": str, "name": str, "str": str, "int": int, "float": float, "bool": bool, "nproc": int, "id": int}


class SFTAlgorithm(Algorithm):
    """Supervised fine-tuning; train() takes exactly sft()'s parameters."""

    def train(self, model_path: str, data_path: str, ckpt_output_dir: str, **kwargs: Any) -> Any:
        from .api import run_sft

        kwargs.setdefault("backend", self.backend.name)
        return run_sft(dict(model_path=model_path, data_path=data_path, ckpt_output_dir=ckpt_output_dir, **kwargs),
                       backend=self.backend)

    def get_required_params(self) -> Dict[str, Type]:
        required = {p.name: _TYPES[p.kind] for p in PARAMS if p.core}
        required["max_batch_len"] = int  # as training_hub documents it (user-facing name: max_tokens_per_gpu)
        return required

    def get_optional_params(self) -> Dict[str, Type]:
        return {p.name: _TYPES[p.kind] for p in PARAMS
                if not p.core and not p.own and p.name != "max_tokens_per_gpu"}


def create_algorithm(algorithm_name: str, backend_name: str | None = None, **kwargs: Any) -> Algorithm:
    """An algorithm instance with the named backend (None: the algorithm's default backend)."""
    backend = registry.backend_class(backend_name, algorithm_name)()
    return registry.algorithm_class(algorithm_name)(backend=backend, **kwargs)
