"""instructlab-training workers (0.16.2): a full-state save every HPC_SFT_FULL_STATE_EVERY_S seconds, after
which training goes on. It rides on ILT's own per-step on-demand check: right after each optimizer step every
rank votes (rank 0's clock decides) and, when due, all save the same step through ILT's save_full_state, which
the resume shim stages, marks and publishes like any other full state."""

import functools
import os
import sys

from . import saves

_state = {"clock": None, "stepped": False}


def install() -> None:
    from hpc_sft_shim.hooks import on_import

    _state["clock"] = saves.Clock(saves.every_s_from_env())
    on_import("instructlab.training.accelerator", _note_steps)
    on_import("instructlab.training.utils", _note_saves)
    on_import("instructlab.training.on_demand_checkpoint", _patch_check)


def _note_steps(module) -> None:
    from .hooks import call_after

    call_after(module.Accelerator, "take_optimizer_step", lambda *_: _state.update(stepped=True))


def _note_saves(module) -> None:
    from .hooks import call_after

    call_after(module, "save_full_state", lambda *_: _state["clock"].saved())


def _patch_check(module) -> None:
    """main_ds.py:316 calls check_checkpoint_requested() after every optimizer step (and :291 before it)."""
    original = module.check_checkpoint_requested

    @functools.wraps(original)
    def check_checkpoint_requested():
        if original():
            return True  # a warning signal: ILT saves and stops
        if _state["stepped"]:  # the call right after an optimizer step: the train loop's state is final
            _state["stepped"] = False
            if _agreed(_state["clock"].due()):
                _save_and_go_on(_train_loop_locals())
        return False

    module.check_checkpoint_requested = check_checkpoint_requested


def _train_loop_locals() -> dict:
    """The variables of main_ds.train (the nearest caller that has them; other shims may wrap this check)."""
    frame = sys._getframe(2)
    while frame is not None and not {"args", "accelerator", "samples_seen", "epoch"} <= frame.f_locals.keys():
        frame = frame.f_back
    if frame is None:
        raise RuntimeError("hpc-sft shim: periodic save found no instructlab-training train loop to save")
    return frame.f_locals


def _agreed(due: bool) -> bool:
    """Rank 0's answer on every rank (one small collective per step)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return due
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    vote = torch.tensor([1 if due and dist.get_rank() == 0 else 0], dtype=torch.int32, device=device)
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return bool(vote.item())


def _save_and_go_on(loop: dict) -> None:
    """A full state of the step just completed, from the train loop's own variables (main_ds.py:176 train)."""
    from instructlab.training import utils

    from .resume import completed_steps

    args, epoch = loop["args"], loop["epoch"]
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"hpc-sft shim: periodic full-state save at {loop['samples_seen']} samples (epoch {epoch})",
              file=sys.stderr, flush=True)
    utils.save_full_state(args=args, accelerator=loop["accelerator"], is_lora=bool(args.lora_r), epoch=epoch,
                          samples_seen=loop["samples_seen"], global_step=completed_steps(args, epoch))
