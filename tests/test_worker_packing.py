"""Upstream deadlock guard: ILT's padded packer gives ranks different minibatch counts; the shim evens them."""
import sys

import pytest

from hpc_sft.launch import WORKER_DIR

padded = pytest.importorskip("instructlab.training.padded_batch_packer", reason="instructlab-training missing")

# one real step of the tiny data set (epoch 1, step 14, seed 42): rank 0 gets 1 minibatch, rank 1 gets 2
LENGTHS = [76, 60, 41, 46, 41, 78, 46, 42, 43, 46, 46, 42, 60, 56, 46, 39]


@pytest.fixture
def packing():
    sys.path.insert(0, str(WORKER_DIR))
    try:
        from hpc_sft_shim import packing as module

        yield module
    finally:
        sys.path.remove(str(WORKER_DIR))


def test_upstream_packer_gives_ranks_different_counts():
    counts = [len(padded.batch_lengths_to_minibatches_padded(LENGTHS, 4000, 2, r)) for r in (0, 1)]
    assert counts == [1, 2]


def test_equalised_packer_pads_with_placeholders_and_keeps_samples(packing):
    pack = packing.equalised(padded.batch_lengths_to_minibatches_padded)
    per_rank = [pack(LENGTHS, 4000, 2, r) for r in (0, 1)]
    assert [len(p) for p in per_rank] == [2, 2]
    assert per_rank[0][-1] == [-1]  # the collator's dummy sample: no loss-counted tokens
    real = sorted(i for p in per_rank for mb in p for i in mb if i != -1)
    assert real == list(range(len(LENGTHS)))
