"""HPC_SFT_TRACKING: instructlab-training's TensorBoard and W&B loggers continue ONE run across resumes.

instructlab-training 0.16.2 (logger.py) has two habits that split a requeued run:
- ``TensorBoardHandler`` writes into ``{tensorboard_log_dir}/{time}_rank{rank}``: a new TensorBoard run per
  start. Here it writes into ``tensorboard_log_dir`` itself (hpc-sft passes ``{ckpt}/tensorboard``).
- the step it logs (``main_ds.py:train``'s ``global_step``) counts from 1 in every process, from the start of
  the epoch the process resumed into. Here the TensorBoard and W&B handlers get the step of the whole run:
  ``first_epoch * num_epoch_steps + global_step``, where ``first_epoch = epoch - ceil(global_step /
  num_epoch_steps) + 1`` (every value is in the record itself; an epoch has ``num_epoch_steps`` batches).
  The per-step metrics file keeps instructlab-training's own numbers.

The TensorBoard writer is created with ``purge_step`` = the first step this process logs, so that steps a
crash made the run repeat (trained again from the last full state) replace the earlier ones instead of doubling
them. Its hparams records (logged before any step) wait until then.
"""

import copy
import functools
from collections.abc import Mapping

# the step offset (first_epoch * num_epoch_steps) of this process, from its newest per-step record
_offset = {"steps": None}


def install() -> None:
    from hpc_sft_shim.hooks import on_import

    on_import("instructlab.training.logger", patch_logger)


def run_step(record):
    """The record with the step of the whole run (a copy; the other handlers keep the original)."""
    step, msg = getattr(record, "step", None), record.msg
    if not isinstance(step, int) or not isinstance(msg, Mapping):
        return record
    per_epoch, epoch = msg.get("num_epoch_steps"), msg.get("epoch")
    if isinstance(per_epoch, int) and per_epoch > 0 and isinstance(epoch, int) and step >= 1:
        first_epoch = epoch - (-(-step // per_epoch)) + 1
        _offset["steps"] = max(0, first_epoch) * per_epoch
    if not _offset["steps"]:
        return record
    new = copy.copy(record)
    new.step = step + _offset["steps"]
    if msg.get("step") == step:
        new.msg = {**msg, "step": new.step}
    return new


def patch_logger(module) -> None:
    _one_tensorboard_folder(module.TensorBoardHandler)
    _run_steps(module.WandbHandler)


def _one_tensorboard_folder(handler) -> None:
    original_init, original_emit = handler.__init__, handler.emit

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        log_dir = kwargs.get("log_dir", args[2] if len(args) > 2 else None)
        run_name = kwargs.get("run_name", args[1] if len(args) > 1 else None)
        if log_dir is not None and run_name is None:  # instructlab-training passes run_name=None
            self.tboard_init_kwargs["log_dir"] = log_dir
        self._hpc_sft_waiting = []

    @functools.wraps(original_emit)
    def emit(self, record):
        record = run_step(record)
        if self._tboard_writer is None:
            step = getattr(record, "step", None)
            if not isinstance(step, int):
                self._hpc_sft_waiting.append(record)  # hparams: once the writer (and purge_step) exist
                return
            self.tboard_init_kwargs.setdefault("purge_step", step)
            original_emit(self, record)
            for waiting in self._hpc_sft_waiting:
                original_emit(self, waiting)
            self._hpc_sft_waiting = []
            return
        original_emit(self, record)

    handler.__init__, handler.emit = __init__, emit


def _run_steps(handler) -> None:
    original_emit = handler.emit

    @functools.wraps(original_emit)
    def emit(self, record):
        original_emit(self, run_step(record))

    handler.emit = emit
