"""The one definition of sft()'s parameters: name, type, default, section, doc and range."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Optional, Union

from ..registry import EXECUTORS
from ..tracking import CHOICES as TRACKING_CHOICES

# kind -> (python types accepted, annotation shown in the signature)
KINDS: dict[str, tuple[tuple[type, ...], Any]] = {
    "path": ((str,), str),
    "name": ((str,), str),
    "str": ((str,), Optional[str]),
    "int": ((int,), Optional[int]),
    "float": ((float, int), Optional[float]),
    "bool": ((bool,), Optional[bool]),
    "nproc": ((int, str), Optional[Union[int, str]]),
    "id": ((int, str), Optional[Union[int, str]]),
    "slurm": ((dict, object), Optional[Any]),
    "sweep": ((dict,), Optional[dict]),
    "trackers": ((str, list, tuple), Optional[Union[str, list]]),
}


@dataclass(frozen=True)
class Param:
    """One sft() parameter. `bound` is 'positive', 'nonneg' or ''."""

    name: str
    kind: str
    doc: str
    section: str
    default: Any = None
    bound: str = ""
    choices: tuple = ()
    positional: bool = False
    core: bool = False  # listed by SFTAlgorithm.get_required_params()
    own: bool = False  # hpc-sft's own, not one of training_hub's sft() parameters

    @property
    def annotation(self) -> Any:
        return KINDS[self.kind][1]


P = Param
PARAMS: tuple[Param, ...] = (
    P("model_path", "path", "Model to fine-tune: a local directory or a Hugging Face model id.",
      "Required", positional=True, core=True),
    P("data_path", "path", "Training data: a messages-format JSONL file (or documents when is_pretraining).",
      "Required", positional=True, core=True),
    P("ckpt_output_dir", "path", "Where checkpoints, full training states and logs go (shared by all nodes).",
      "Required", positional=True, core=True),
    P("backend", "name", "Training backend: 'instructlab-training' or 'trl' (docs/backends.md).", "Backend",
      default="instructlab-training"),
    P("num_epochs", "int", "Number of passes over the data.", "Training", bound="positive", core=True),
    P("effective_batch_size", "int", "Samples per optimizer step, summed over all processes.",
      "Training", bound="positive", core=True),
    P("learning_rate", "float", "Peak learning rate.", "Training", bound="positive", core=True),
    P("max_seq_len", "int", "Longest sample kept, in tokens.", "Training", bound="positive", core=True),
    P("max_tokens_per_gpu", "int", "Token budget of one micro-batch on one device (backend: max_batch_len).",
      "Training", bound="positive"),
    P("data_output_dir", "str", "Where tokenized data goes (default: {ckpt_output_dir}/data).", "Data"),
    P("save_samples", "int", "Also save an hf_format checkpoint every N samples (0: off).",
      "Checkpointing", bound="nonneg"),
    P("warmup_steps", "int", "Learning-rate warmup steps.", "Training", bound="nonneg"),
    P("accelerate_full_state_at_epoch", "bool",
      "Save the full training state (optimizer, scheduler, RNG) at each epoch end, for resume.",
      "Checkpointing"),
    P("checkpoint_at_epoch", "bool", "Save an hf_format checkpoint at each epoch end.", "Checkpointing"),
    P("is_pretraining", "bool", "Train on raw documents (needs block_size).", "Pretraining"),
    P("block_size", "int", "Tokens per block in pretraining mode.", "Pretraining", bound="positive"),
    P("document_column_name", "str", "Field holding the raw text in pretraining mode (default: document).",
      "Pretraining"),
    P("nproc_per_node", "nproc", "Processes per node: an int, or 'gpu' for one per visible GPU "
      "(default: all GPUs, or 1 on CPU). Under Slurm: read on each compute node.",
      "Distributed", bound="positive"),
    P("nnodes", "int", "Number of nodes (under Slurm: the allocation's node count).", "Distributed",
      bound="positive"),
    P("node_rank", "int", "This node's rank (under Slurm: derived per node; do not set).", "Distributed",
      bound="nonneg"),
    P("rdzv_id", "id", "Rendezvous id shared by all nodes (under Slurm: the job id).", "Distributed"),
    P("rdzv_endpoint", "str", "host:port of node 0's rendezvous (under Slurm: first node, port from the job id).",
      "Distributed"),
    P("executor", "name", "Where to run: 'local' (here, now), 'slurm' (submit a job) or 'srun' (now, inside "
      "the current allocation).", "hpc-sft",
      default="local", choices=tuple(EXECUTORS), own=True),
    P("slurm", "slurm", "SlurmOptions, or a dict of its fields (executor='slurm').", "hpc-sft", own=True),
    P("sweep", "sweep", "{'grid': {key: [values]}, 'list': [{...}], 'max_parallel': N}: one task per "
      "combination, each in its own folder under ckpt_output_dir; executor='slurm' queues one job array "
      "(docs/sweeps.md).", "hpc-sft", own=True),
    P("device", "str", "None: cuda if a GPU is visible, else cpu; or 'cuda' / 'cpu'.", "hpc-sft",
      choices=("cuda", "cpu"), own=True),
    P("settings_changed", "name", "A rerun into a ckpt_output_dir trained with other settings: 'refuse' "
      "(names the keys that changed) or 'continue' (resume with the new settings on purpose).", "hpc-sft",
      default="refuse", choices=("refuse", "continue"), own=True),
    P("full_state_every_min", "float", "Also save a full training state every N minutes of training and go on "
      "(0: off), so that a failure without warning loses at most that much (docs/requeue.md).",
      "Checkpointing", default=60, bound="nonneg", own=True),
    P("keep_full_states", "int", "Full training states kept for resume, newest first (0: every one). An older "
      "state is deleted only after a newer one is complete and verified.", "Checkpointing", default=1,
      bound="nonneg", own=True),
    P("tracking", "trackers", "Experiment tracking through the backend's own loggers: 'tensorboard', 'wandb', "
      "or a list of both (None/'none': off). One run across requeues and resumes: TensorBoard events in "
      "{ckpt_output_dir}/tensorboard, steps continuing; W&B offline by default with one run id kept in "
      "ckpt_output_dir, `wandb sync` from the login node (docs/tracking.md).", "hpc-sft",
      choices=TRACKING_CHOICES, own=True),
)
BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
KWARGS_NAME = "backend_kwargs"


def signature() -> inspect.Signature:
    """The sft() signature, built from PARAMS."""
    params = [
        inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=p.annotation,
                          **({} if p.positional else {"default": p.default}))
        for p in PARAMS
    ]
    params.append(inspect.Parameter(KWARGS_NAME, inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params, return_annotation=Any)


def _config_fields() -> list:
    fields = [(p.name, p.annotation, field(default=p.default)) for p in PARAMS]
    return fields + [(KWARGS_NAME, dict, field(default_factory=dict))]


SFTConfig = make_dataclass("SFTConfig", _config_fields(), frozen=True)
SFTConfig.__module__ = __name__  # so pickling (submitit) finds it
SFTConfig.__doc__ = "A validated sft() call: every parameter of PARAMS plus the backend's own kwargs."


def docs_markdown() -> str:
    """The parameter reference, generated from PARAMS (docs/parameters.md)."""
    lines = ["# sft() and recipe [sft] parameters", "",
             "Generated from `hpc_sft/config/spec.py` by `python -m hpc_sft.docgen`; do not edit by hand.", ""]
    for section in dict.fromkeys(p.section for p in PARAMS):
        lines += [f"## {section}", "", "| name | type | default | range | meaning |", "|---|---|---|---|---|"]
        for p in (q for q in PARAMS if q.section == section):
            default = "required" if p.positional else ("backend default" if p.default is None else repr(p.default))
            rng = p.bound or (", ".join(map(repr, p.choices)) if p.choices else "")
            lines.append(f"| `{p.name}` | {p.kind} | {default} | {rng} | {p.doc} |")
        lines.append("")
    lines += ["## Backend fields", "",
              "Any other keyword is handed to the backend and checked against its own fields "
              "(an unknown one is an error listing the valid ones). See docs/backends.md.", ""]
    return "\n".join(lines)
