"""Every worker: instructlab-training's numba batch packers are compiled once per machine, not at every start.

batch_packer.py and padded_batch_packer.py decorate their packers with a bare @njit, so each worker process
compiles them again on its first batch: about 5 s of CPU per rank at every start and every resume (measured
on the 2-core test machine; 0.25 s from the cache). Numba's own on-disk cache is switched on for them: it is
keyed by the source file, the argument types and the CPU, and kept next to the source (`__pycache__`), or in
NUMBA_CACHE_DIR, or in the user's cache folder. The packing result is the same integer arithmetic either way.
"""

import sys

from hpc_sft_shim.hooks import on_import

MODULES = ("instructlab.training.batch_packer", "instructlab.training.padded_batch_packer")


def install() -> None:
    for name in MODULES:
        on_import(name, cache_compiled)


def cache_compiled(module) -> None:
    """Switch on numba's disk cache for every jitted function of `module` (nothing if it cannot be kept)."""
    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:
        return
    for value in list(vars(module).values()):
        if isinstance(value, CPUDispatcher):
            try:
                value.enable_caching()
            except Exception as exc:  # no writable cache folder (a read-only image): compile as before
                sys.stderr.write(f"hpc-sft shim: numba cache off for {value.__name__}: {exc}\n")
                return
