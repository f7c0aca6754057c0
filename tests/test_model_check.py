"""The final-checkpoint check: a checkpoint from_pretrained would load as random weights is refused."""
from __future__ import annotations

import shutil

import pytest

from hpc_sft.errors import TrainingError
from hpc_sft.model_check import load_problem, verify_loadable


def test_clean_checkpoint_passes(tiny_model):
    assert load_problem(tiny_model) is None
    assert verify_loadable(tiny_model) == tiny_model


def test_ddp_prefixed_keys_are_refused(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "prefixed"
    shutil.copytree(tiny_model, bad)
    state = load_file(str(bad / "model.safetensors"))
    save_file({f"module.{k}": v for k, v in state.items()}, str(bad / "model.safetensors"))
    with pytest.raises(TrainingError, match=r"unexpected keys module\.lm_head\.weight.*missing keys lm_head\.weight"):
        verify_loadable(bad)


def test_missing_tensor_and_wrong_shape_are_named(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "torn"
    shutil.copytree(tiny_model, bad)
    state = load_file(str(bad / "model.safetensors"))
    state.pop("model.norm.weight")
    state["lm_head.weight"] = torch.zeros(3, 3)
    save_file(state, str(bad / "model.safetensors"))
    problem = load_problem(bad)
    assert "missing keys model.norm.weight" in problem and "shape mismatches lm_head.weight" in problem, problem
