"""HPC_SFT_HF_KEYS: hf_format checkpoints of a DDP-wrapped model are saved without DDP's 'module.' prefix.

instructlab-training saves them with `accelerator.get_state_dict(model, unwrap=False)`, where `model` is
its own wrapper around the prepared model. Under FSDP the keys come out clean; on CPU (DDP over gloo) they
come out as `module.model.…`, and `from_pretrained` then warns and returns a randomly initialised model.
The prefix is dropped only inside `save_hf_format_accelerate`: full training states keep DDP's keys,
which `accelerator.load_state` needs.
"""

import functools

from hpc_sft_shim.hooks import on_import

PREFIX = "module."
_saving = [0]  # > 0 while an hf_format save runs


def install() -> None:
    on_import("instructlab.training.utils", _patch_utils)
    on_import("accelerate", _patch_accelerator)


def _patch_utils(utils) -> None:
    original = utils.save_hf_format_accelerate

    @functools.wraps(original)
    def save_hf_format_accelerate(*args, **kwargs):
        _saving[0] += 1
        try:
            return original(*args, **kwargs)
        finally:
            _saving[0] -= 1

    utils.save_hf_format_accelerate = save_hf_format_accelerate


def _patch_accelerator(accelerate) -> None:
    cls = accelerate.Accelerator
    original = cls.get_state_dict

    @functools.wraps(original)
    def get_state_dict(self, model, unwrap=True):
        state = original(self, model, unwrap=unwrap)
        return unprefixed(model, state) if _saving[0] else state

    cls.get_state_dict = get_state_dict


def unprefixed(model, state):
    """`state` without DDP's leading 'module.' when the (wrapped) model is DDP and every key carries it."""
    from torch.nn.parallel import DistributedDataParallel

    inner = getattr(model, "model", model)
    if not isinstance(inner, DistributedDataParallel) or not state:
        return state
    if not all(key.startswith(PREFIX) for key in state):
        return state
    return type(state)((key[len(PREFIX):], value) for key, value in state.items())
