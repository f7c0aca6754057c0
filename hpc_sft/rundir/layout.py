"""The layout of ckpt_output_dir: the name of every file and folder a run writes there (one home for each),
and readers of the parts every backend shares (hf_format/samples_N, the metrics file, the final result).

No heavy imports: the login node (`hpc-sft status`) and the finish-or-requeue decision read these.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..result import TrainingResult

# ---- written by hpc_sft itself
STATUS_FILE = "hpc_sft_status.json"  # the status record: stops, outcome (rundir.status)
SETTINGS_FILE = "hpc_sft_settings.json"  # the settings a run trained with (rundir.settings)
LOCK_FILE = ".hpc_sft.lock"  # which job trains into this directory (rundir.lock)
CANCELLED_FILE = "hpc_sft_cancelled.json"  # resubmit chains the user cancelled: no job of them goes on (rundir.status)
LOCAL_LOG = "hpc_sft_local.log"  # a local run's console output, appended across runs (console)
WANDB_RUN_ID_FILE = "hpc_sft_wandb_run_id"  # the W&B run every start of this run continues (tracking)

# ---- written by the training backends
METRICS_FILE = "training_params_and_metrics_global0.jsonl"  # per-step metrics of rank 0 (every backend)
HF_FORMAT = "hf_format"  # hf_format/samples_N: loadable checkpoints (every backend)
LAST_EPOCH = "last_epoch"  # hf_format/last_epoch
FULL_STATE = "full_state"  # instructlab-training: full_state/epoch_E
QUARANTINE = "quarantine"  # instructlab-training: torn full states moved aside
TRAINER_CHECKPOINTS = "checkpoint-*"  # trl: checkpoint-N
PROGRESS = (FULL_STATE, HF_FORMAT, TRAINER_CHECKPOINTS)  # anything a resume would start from
TENSORBOARD_DIR = "tensorboard"  # tracking: the backends' TensorBoard events of the whole run, one folder
WANDB_DIR = "wandb"  # tracking: wandb's own folder (offline-run-*-ID/ per start, one run id)
SAMPLES_RE = re.compile(r"^samples_(\d+)$")


def node_log(node_rank: int) -> str:
    """The training log of one node (the backend's processes write it)."""
    return f"full_logs_global{node_rank}.log"


def trl_launch_file(node_rank: int) -> str:
    """The trl backend's config + launch layout for its torchrun workers on one node."""
    return f"trl_launch_node{node_rank}.json"


def trl_stop_file(rdzv_id, node_rank: int) -> str:
    """The trl backend's stop request for its workers: unique to the run and the node."""
    return f".hpc_sft_stop.{rdzv_id}.node{node_rank}"


def node_stopped_file(attempt: str, node_rank: int) -> str:
    """A node's training processes have ended in this attempt (JOBID.RESTART): node 0 waits for every
    node's before it requeues, so that the requeue never kills a node that is still saving or leaving."""
    return f".hpc_sft_stopped.{attempt}.node{node_rank}"


def beats_dir(attempt: str) -> str:
    """Every rank's progress beats and stack dumps of one attempt (the hang watchdog reads them)."""
    return f".hpc_sft_beats/{attempt}"


def hang_record_file(attempt: str, node_rank) -> str:
    """A node's hang record: what stalled and which of its ranks look stuck (node 0 excludes their node)."""
    return f".hpc_sft_hang.{attempt}.node{node_rank}.json"


def hf_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(samples, path) of every complete hf_format/samples_N checkpoint, oldest first."""
    root = Path(ckpt_dir) / HF_FORMAT
    found = []
    for child in root.iterdir() if root.is_dir() else ():
        match = SAMPLES_RE.match(child.name)
        if match and (child / "config.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def metrics_file(ckpt_dir: Path) -> Optional[Path]:
    path = Path(ckpt_dir) / METRICS_FILE
    return path if path.is_file() else None


def result_from_disk(ckpt_dir: Path, restarts: int = 0) -> TrainingResult:
    """The TrainingResult of a finished run, read from its checkpoint directory; its final checkpoint is
    verified to load with from_pretrained as the saved weights (TrainingError otherwise)."""
    from ..model_check import verify_loadable

    ckpts = hf_checkpoints(ckpt_dir)
    samples, path = ckpts[-1] if ckpts else (None, None)
    last = Path(ckpt_dir) / HF_FORMAT / LAST_EPOCH
    if path is None and (last / "config.json").is_file():
        path = last
    if path is not None:
        verify_loadable(path)
    return TrainingResult(Path(ckpt_dir), path, samples, metrics_file(ckpt_dir), restarts)
