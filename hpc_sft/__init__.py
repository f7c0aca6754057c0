"""hpc-sft: training_hub-compatible sft() on your laptop or a Slurm cluster, requeue-safe."""
from .algorithms import Algorithm, SFTAlgorithm, create_algorithm
from .api import sft
from .backends.base import Backend
from .backends.instructlab.backend import InstructLabTrainingSFTBackend
from .backends.trl.backend import TRLSFTBackend
from .config.slurm_options import SlurmOptions
from .config.spec import SFTConfig
from .errors import ConfigError, HpcSftError, MissingPathError, SubmitError, TrainingError
from .result import TrainingResult

__all__ = [
    "Algorithm", "Backend", "ConfigError", "HpcSftError", "InstructLabTrainingSFTBackend", "MissingPathError",
    "SFTAlgorithm", "SFTConfig", "SlurmOptions", "SubmitError", "TRLSFTBackend", "TrainingError",
    "TrainingResult", "create_algorithm", "sft",
]
__version__ = "0.1.0"
