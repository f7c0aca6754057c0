"""The trl backend's config: static field list, the pure mapping against the real trl.SFTConfig, kwarg and value checks."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from hpc_sft.backends.trl import backend as tb
from hpc_sft.backends.trl import mapping as tm
from hpc_sft.errors import ConfigError
from hpc_sft.launch import Launch

from tests.trl_helpers import trl_config, cpu

real_trl = pytest.importorskip("trl", reason="trl is not installed")


# ---------------------------------------------------------------- static facts

def test_static_field_list_matches_the_real_class():
    real = {f.name for f in dataclasses.fields(real_trl.SFTConfig) if f.init}
    assert tm.SFTCONFIG_FIELDS == real
    assert set(tm.ALIASES) <= real and tm.SAME_NAME <= real


def test_import_does_not_load_heavy_libraries():
    code = ("import sys, hpc_sft.backends.trl.backend; "
            "print([m for m in ('trl', 'transformers', 'datasets', 'torch', 'peft') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- mapping against the real SFTConfig

def test_mapping_against_real_sftconfig(base_kwargs):
    base_kwargs.pop("max_tokens_per_gpu")
    config = trl_config({"seed": 7, "lr_scheduler_type": "constant", "packing": True}, **{
        **base_kwargs, "effective_batch_size": 16, "num_epochs": 3, "save_samples": 50, "warmup_steps": 2})
    args = real_trl.SFTConfig(**tm.map_args(config, cpu()))
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (16, 1)
    assert (args.num_train_epochs, args.learning_rate, args.warmup_steps, args.max_length) == (3, 1e-4, 2, 128)
    assert args.output_dir == base_kwargs["ckpt_output_dir"]
    assert args.save_strategy == "steps" and args.save_steps == 4  # ceil(50 / 16)
    assert args.use_cpu is True and args.report_to in ([], "none", ["none"])
    assert args.logging_strategy == "steps" and args.logging_steps == 1
    assert (args.seed, args.lr_scheduler_type, args.packing) == (7, "constant", True)


@pytest.mark.parametrize("nproc,nnodes,max_tokens,expect", [
    (2, 1, None, (8, 1)),      # world 2: 8 per device, no accumulation
    (1, 2, None, (8, 1)),      # world 2 across nodes
    (2, 1, 256, (2, 4)),       # 256 tokens / 128 max_seq_len -> at most 2 per device: 2 x 4 x 2 = 16
    (2, 2, 384, (2, 2)),       # cap 3 -> largest divisor of 4 not above 3 is 2
    (1, 1, 10, (1, 16)),       # budget below one sample: 1 per device
])
def test_effective_batch_arithmetic_with_world_size(base_kwargs, nproc, nnodes, max_tokens, expect):
    config = dataclasses.replace(trl_config(**{**base_kwargs, "effective_batch_size": 16}),
                                 max_tokens_per_gpu=max_tokens)
    args = real_trl.SFTConfig(**tm.map_args(config, cpu(nproc, nnodes)))
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == expect
    assert expect[0] * expect[1] * nproc * nnodes == 16


def test_save_per_epoch_and_no_cpu_flag_on_cuda(base_kwargs):
    config = trl_config(**base_kwargs, save_samples=0)
    kw = tm.map_args(config, Launch(nproc_per_node=1, device="cuda"))
    assert kw["save_strategy"] == "epoch" and "save_steps" not in kw and "use_cpu" not in kw


def test_impossible_effective_batch_is_a_clear_error(base_kwargs):
    config = trl_config(**{**base_kwargs, "effective_batch_size": 6})
    with pytest.raises(ConfigError) as err:
        tm.map_args(config, cpu(2, 2))
    assert err.value.key == "effective_batch_size" and "divisible by the 4" in str(err.value)


def test_lora_maps_to_a_real_lora_config(base_kwargs):
    from peft import LoraConfig

    config = trl_config({"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_target_modules": ["q_proj"]},
                        **base_kwargs)
    lora = LoraConfig(**tm.lora_args(config))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, set(lora.target_modules)) == (4, 8, 0.0, {"q_proj"})
    assert "lora_r" not in tm.map_args(config, cpu())
    assert tm.lora_args(trl_config(**base_kwargs)) is None


# ---------------------------------------------------------------- kwarg and value checks

def test_unknown_kwarg_lists_fields_with_did_you_mean():
    with pytest.raises(ConfigError) as err:
        tb.TRLSFTBackend.check_kwargs({"packin": True})
    text = str(err.value)
    assert "did you mean 'packing'" in text and "lora_r" in text and "assistant_only_loss" in text
    with pytest.raises(ConfigError, match="lora_r"):
        tb.TRLSFTBackend.check_kwargs({"lora_rank": 4})


def test_fields_set_through_sft_are_refused_with_the_parameter_to_use():
    with pytest.raises(ConfigError, match="num_epochs"):
        tb.TRLSFTBackend.check_kwargs({"num_train_epochs": 2})
    with pytest.raises(ConfigError, match="max_seq_len"):
        tb.TRLSFTBackend.check_kwargs({"max_length": 2})
    for field in ("output_dir", "per_device_train_batch_size", "save_steps", "use_cpu"):
        with pytest.raises(ConfigError):
            tb.TRLSFTBackend.check_kwargs({field: 1})


def test_check_values_names_the_rejected_kwarg(base_kwargs):
    with pytest.raises(ConfigError) as err:
        tb.TRLSFTBackend().check_values(trl_config({"lr_scheduler_type": "bogus"}, **base_kwargs))
    assert err.value.key == "lr_scheduler_type" and "trl.SFTConfig" in str(err.value)
    tb.TRLSFTBackend().check_values(trl_config({"optim": "adamw_torch", "packing": False}, **base_kwargs))


def test_check_values_checks_batch_against_slurm_nodes(base_kwargs):
    from types import SimpleNamespace

    config = dataclasses.replace(trl_config(**{**base_kwargs, "effective_batch_size": 6}),
                                 slurm=SimpleNamespace(nodes=4))
    with pytest.raises(ConfigError, match="divisible by the 4"):
        tb.TRLSFTBackend().check_values(config)


def test_check_values_refuses_pretraining(base_kwargs):
    config = dataclasses.replace(trl_config(**base_kwargs), is_pretraining=True, block_size=64)
    with pytest.raises(ConfigError, match="is_pretraining"):
        tb.TRLSFTBackend().check_values(config)


@pytest.mark.parametrize("lora,key", [
    ({"lora_r": 0}, "lora_r"), ({"lora_r": 4, "lora_dropout": "x"}, "lora_dropout"),
    ({"lora_r": 4, "lora_alpha": -1}, "lora_alpha"), ({"lora_r": 4, "lora_target_modules": 5}, "lora_target_modules"),
    ({"lora_alpha": 16}, "lora_alpha"),
])
def test_check_values_rejects_bad_lora(base_kwargs, lora, key):
    with pytest.raises(ConfigError) as err:
        tb.TRLSFTBackend().check_values(trl_config(lora, **base_kwargs))
    assert err.value.key == key
