"""Mistakes caught before the queue: pure checks that sft() and the CLI refuse with the key and the fix."""
import pytest

import hpc_sft
from hpc_sft.errors import ConfigError
from hpc_sft.slurm_options import time_to_minutes


def refused(kwargs, *words):
    with pytest.raises(ConfigError) as exc:
        hpc_sft.sft(**kwargs)
    for word in words:
        assert word in str(exc.value), str(exc.value)
    return str(exc.value)


def test_max_seq_len_above_max_tokens_per_gpu(base_kwargs):
    text = refused({**base_kwargs, "max_seq_len": 2048, "max_tokens_per_gpu": 1000},
                   "max_seq_len: 2048 is larger than max_tokens_per_gpu=1000")
    assert "Fix: raise max_tokens_per_gpu to at least 2048" in text


@pytest.mark.parametrize("over,world", [
    ({"nproc_per_node": 4, "nnodes": 2}, 8),
    ({"nproc_per_node": 3, "executor": "slurm", "slurm": {"nodes": 2}}, 6),
])
def test_effective_batch_below_process_count(base_kwargs, over, world):
    kwargs = {**base_kwargs, "effective_batch_size": world - 1, **over}
    text = refused(kwargs, "effective_batch_size", f"smaller than the {world} training processes")
    assert f"at least {world}" in text


@pytest.mark.parametrize("text,field", [
    ("25:99", "seconds = 99"), ("10:60:00", "minutes = 60"), ("1-24", "hours = 24"),
    ("1-23:60", "minutes = 60"), ("2-00:00:75", "seconds = 75"),
])
def test_out_of_range_time_fields_are_refused(text, field):
    with pytest.raises(ConfigError) as exc:
        time_to_minutes(text)
    assert str(exc.value).startswith("slurm.time:") and field in str(exc.value) and "Fix:" in str(exc.value)


@pytest.mark.parametrize("text,minutes", [("48:00:00", 2880), ("25:59", 26), ("1-23:59:59", 2880), ("90", 90)])
def test_in_range_times_still_pass(text, minutes):
    assert time_to_minutes(text) == minutes


def test_local_recipe_skeleton_carries_no_slurm_table():
    import tomllib

    from hpc_sft.render import recipe_text

    assert "slurm" not in tomllib.loads(recipe_text("r.toml", "local"))
    assert "slurm" in tomllib.loads(recipe_text("r.toml", "slurm"))
