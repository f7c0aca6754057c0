"""HPC_SFT_EQUAL_MINIBATCHES: every rank gets the same number of minibatches per step.

instructlab-training 0.16.2's padded batch packer (used whenever flash attention is off, e.g. on CPU) can
hand ranks different minibatch counts for one step; the rank with fewer then waits in an all_reduce
while the other is still in a forward pass: a silent deadlock. We pad the shorter ranks with the
packer's own placeholder minibatch ([-1]: the collator's dummy sample, which adds no loss).
"""

from hpc_sft_shim.hooks import on_import


def install() -> None:
    on_import("instructlab.training.sampler", _patch_sampler)


def equalised(packer):
    """Wrap a packer(lengths, max_tokens, num_ranks, rank) so all ranks return as many minibatches."""

    def pack(batch_lengths, max_tokens_per_rank, num_ranks, rank):
        mine = packer(batch_lengths, max_tokens_per_rank, num_ranks, rank)
        most = max(len(packer(batch_lengths, max_tokens_per_rank, num_ranks, r)) for r in range(num_ranks))
        return list(mine) + [[-1]] * (most - len(mine))

    pack.__wrapped__ = packer
    return pack


def _patch_sampler(sampler) -> None:
    sampler.batch_lengths_to_minibatches_padded = equalised(sampler.batch_lengths_to_minibatches_padded)
