"""HPC_SFT_CPU: run instructlab-training's CUDA-only worker code on CPU (gloo backend)."""

import collections
import contextlib
import functools
import os
import sys

from hpc_sft_shim import leave
from hpc_sft_shim.gate import require_tested
from hpc_sft_shim.hooks import on_import



def install() -> None:
    """Hide GPUs, make accelerate use CPU/DDP, and register the narrow patches."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if "ACCELERATE_USE_CPU" not in os.environ:
        os.environ["ACCELERATE_USE_CPU"] = "1"  # else >1 rank silently skips grad sync
    on_import("instructlab.training", _check_supported)
    on_import("torch", _patch_torch)
    on_import("instructlab.training.sampler", _patch_sampler)
    on_import("instructlab.training.batch_loss_manager", _patch_batch_loss_manager)
    on_import("instructlab.training.on_demand_checkpoint", _patch_on_demand_checkpoint)
    leave.install()  # gloo: a finished worker could hang while freeing its process group


def _check_supported(_module) -> None:
    require_tested("HPC_SFT_CPU")
    if _validation_split(sys.argv) > 0:
        raise RuntimeError("HPC_SFT_CPU: validation_split > 0 is not supported on CPU "
                           "(instructlab-training computes validation loss on cuda).")


def _validation_split(argv) -> float:
    for i, arg in enumerate(argv):
        if arg.startswith("--validation_split="):
            return float(arg.split("=", 1)[1])
        if arg == "--validation_split" and i + 1 < len(argv):
            return float(argv[i + 1])
    return 0.0


def _patch_torch(torch) -> None:
    """main_ds.py: set_device (554), ByteTensor(...).cuda() (564), memory stats (327-328)."""
    torch.cuda.set_device = lambda device: None
    torch.Tensor.cuda = _tensor_cuda_stays_on_cpu
    torch.cuda.memory_allocated = lambda device=None: 0
    torch.cuda.memory_stats = lambda device=None: collections.defaultdict(int)


def _tensor_cuda_stays_on_cpu(self, device=None, non_blocking=False, **kwargs):
    return self.to("cpu")


def _patch_sampler(sampler) -> None:
    """main_ds.py:645 hard-codes num_workers=8; on CPU the workers only cost start-up."""
    original = sampler.get_data_loader

    @functools.wraps(original)
    def get_data_loader(*args, **kwargs):
        kwargs["num_workers"] = 0
        return original(*args, **kwargs)

    sampler.get_data_loader = get_data_loader


def _patch_batch_loss_manager(blm) -> None:
    """batch_loss_manager.py:73 hard-codes torch.device("cuda", local_rank)."""
    import torch

    original_init = blm.BatchLossManager.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.torch_device = torch.device("cpu")

    blm.BatchLossManager.__init__ = __init__


def _patch_on_demand_checkpoint(odc) -> None:
    """on_demand_checkpoint.py:248 builds its all_reduce tensor on cuda.current_device()."""
    original = odc.check_checkpoint_requested

    @functools.wraps(original)
    def check_checkpoint_requested():
        with _current_device_is_cpu(odc.torch):
            return original()

    odc.check_checkpoint_requested = check_checkpoint_requested


@contextlib.contextmanager
def _current_device_is_cpu(torch):
    saved = torch.cuda.current_device
    torch.cuda.current_device = lambda: "cpu"
    try:
        yield
    finally:
        torch.cuda.current_device = saved
