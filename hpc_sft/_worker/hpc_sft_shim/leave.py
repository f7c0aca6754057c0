"""HPC_SFT_CPU: a finished worker leaves as soon as main_ds has destroyed its process group (no deadlock at exit).

main_ds.py:748-749 ends a run with barrier() and destroy_process_group(); main() then returns and frees the
DDP model. Its Reducer frees the gloo process group while holding the GIL and joins gloo's worker threads,
and one of them may still need the GIL to free the tensors of the last all_reduce: the worker hangs for ever
after a finished run (seen once on a loaded 2-core machine; torch issue 56297, gloo's destructor is not GIL-safe).
So the wrapped destroy_process_group() finishes what a normal exit would (the metrics lines still queued in
instructlab-training's async JSONL logger, the atexit handlers, stdout) and ends the process with exit code 0
without freeing anything.
"""

import asyncio
import atexit
import functools
import os
import sys
import weakref

from hpc_sft_shim.hooks import call_after, on_import

_loggers: "weakref.WeakSet" = weakref.WeakSet()
DRAIN_S = 30.0  # at most, for the metrics lines still being written


def install() -> None:
    on_import("torch", _wrap_destroy)
    on_import("instructlab.training.async_logger", _track_loggers)


def _wrap_destroy(_torch) -> None:
    import torch.distributed as dist

    original = dist.destroy_process_group

    @functools.wraps(original)
    def destroy_process_group(group=None):
        original(group)
        if group is None:  # the default group: the run's last act in main_ds.main()
            leave()

    dist.destroy_process_group = destroy_process_group


def _track_loggers(module) -> None:
    call_after(module.AsyncStructuredLogger, "__init__", lambda logger, *_: _loggers.add(logger))


def leave() -> None:
    """Write what is queued, run the exit handlers, flush, and exit 0 without freeing torch objects."""
    for logger in list(_loggers):
        _drain(logger.loop)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _drain(loop) -> None:
    """Wait for the writes queued on an async logger's event loop (its thread is a daemon: exit drops them)."""

    async def pending():
        me = asyncio.current_task()
        await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not me), return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(pending(), loop).result(DRAIN_S)
    except Exception as exc:  # a stopped loop or a slow disk: leave anyway, and say so
        sys.stderr.write(f"hpc-sft shim: metrics lines may be missing at exit: {exc!r}\n")
