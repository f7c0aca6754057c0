"""HPC_SFT_EXACT_RESUME: exact mid-epoch resume and atomic full-state saves (instructlab-training 0.16.2).

Exact mid-epoch resume
    ILT's on-demand save records ``global_step``, a count that starts at 1 per *process* and
    includes the batch being processed even when its optimizer step was not applied (saves
    "during minibatch processing" / "before optimizer step").  Resume then skips that many
    batches of the saved epoch, so a batch is lost (defect A) or, when the interrupted epoch
    was not the first one of that process, a whole epoch and more are skipped (defect B).
    Here the value saved is the number of batches of the *current epoch* whose optimizer step
    has completed, counting batches skipped on resume; ILT's own resume (current_epoch=E,
    skip ``last_step`` batches) then continues with exactly the next batch.

Atomic full-state saves
    ILT writes ``full_state/epoch_E`` in place.  Here every full-state save (on-demand and
    end-of-epoch) goes to ``{ckpt}/.hpc_sft_staging/full_state/epoch_E`` through ILT's own
    ``save_full_state``; when every rank is done, the main process writes
    ``hpc_sft_complete.json`` into it and publishes it with renames; the state it replaces is
    moved to ``{ckpt}/.hpc_sft_staging/replaced/epoch_E`` and deleted only afterwards.
    ``repair_full_states`` (run by the workers before ILT loads a state, and callable from the
    parent) finishes or undoes a publish that a crash interrupted.

(HPC_SFT_SHIELD_SIGNALS, the signal shield for torchrun and the workers, is in sitecustomize.py:
it must act in every process, cheaply.)

This module imports nothing heavy at import time: the parent may import it (as
``hpc_sft._worker.hpc_sft_shim.resume``) for ``repair_full_states`` and ``marker_problem``, and the
trl backend reuses ``write_marker``, ``marker_problem`` and ``barrier`` for its ``checkpoint-N``.
"""

import functools
import json
import os
import re
import shutil
import sys
import time

from . import faults, saves

STAGING_DIR = ".hpc_sft_staging"  # {ckpt}/.hpc_sft_staging/{full_state,replaced}/epoch_E
MARKER = "hpc_sft_complete.json"
MARKER_FORMAT = "hpc-sft-full-state/1"
_EPOCH_DIR = re.compile(r"epoch_\d+")

# optimizer steps completed in this process, per epoch (the EpochSampler's epoch)
_applied_steps: dict = {}


# --------------------------------------------------------------------------
# on-disk protocol (pure python: usable from the parent without torch)
# --------------------------------------------------------------------------


def staging_root(ckpt_dir) -> str:
    return os.path.join(os.fspath(ckpt_dir), STAGING_DIR)


def _list_files(root: str) -> dict:
    """{relative posix path: size} of every regular file under root (marker excluded)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if rel != MARKER and rel != MARKER + ".tmp":
                found[rel] = os.path.getsize(path)
    return found


def _fsync_path(path: str, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories
    finally:
        os.close(fd)


def write_marker(state_dir: str, metadata: dict, extra: dict = None) -> dict:
    """fsync every file of state_dir, then write MARKER (files + sizes + metadata) atomically."""
    files = _list_files(state_dir)
    for rel in files:
        _fsync_path(os.path.join(state_dir, rel))
    record = {"format": MARKER_FORMAT, "files": files, "metadata": metadata,
              "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}
    tmp = os.path.join(state_dir, MARKER + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(state_dir, MARKER))
    _fsync_path(state_dir, directory=True)
    return record


def marker_problem(state_dir) -> "str | None":
    """None when state_dir holds a MARKER whose files all exist with the recorded sizes."""
    state_dir = os.fspath(state_dir)
    try:
        with open(os.path.join(state_dir, MARKER), encoding="utf-8") as fh:
            files = json.load(fh)["files"]
        items = list(files.items())
    except FileNotFoundError:
        return f"no {MARKER}: the save did not finish"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"unreadable {MARKER}"
    for rel, size in items:
        path = os.path.join(state_dir, rel)
        if not os.path.isfile(path):
            return f"missing {rel}"
        if os.path.getsize(path) != size:
            return f"{rel} has {os.path.getsize(path)} bytes, expected {size} (wrong size: the save was cut short)"
    return None


def marker_totals(state_dirs) -> tuple:
    """(longest save_seconds, largest total bytes) over the markers of state_dirs (None where none says)."""
    seconds, sizes = [], []
    for state_dir in state_dirs:
        try:
            with open(os.path.join(os.fspath(state_dir), MARKER), encoding="utf-8") as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(record.get("save_seconds"), (int, float)):
            seconds.append(float(record["save_seconds"]))
        if isinstance(record.get("files"), dict):
            sizes.append(sum(int(v) for v in record["files"].values()))
    return (max(seconds) if seconds else None), (max(sizes) if sizes else None)


def publish(staged: str, final: str, aside: str) -> None:
    """Put the complete state ``staged`` at ``final``; the old ``final`` goes via ``aside``.

    Every step leaves a state repair_full_states() can finish: the last good state is
    deleted only once the new one is at ``final``.
    """
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    if os.path.lexists(aside) and os.path.lexists(final):
        shutil.rmtree(aside)  # left over by a publish that had already finished
    if os.path.lexists(final):
        os.rename(final, aside)
        _fsync_path(os.path.dirname(aside), directory=True)
    os.rename(staged, final)
    _fsync_path(os.path.dirname(final), directory=True)
    _fsync_path(os.path.dirname(staged), directory=True)
    if os.path.lexists(aside):
        shutil.rmtree(aside)


def repair_full_states(ckpt_dir, log=None) -> list:
    """Finish or undo an interrupted save/publish under ckpt_dir; return what was done.

    - a staged state with a valid marker is complete: it is published (rolled forward);
    - a staged state without one is a torn save: it is deleted;
    - a moved-aside state whose full_state/epoch_E is missing is moved back;
      one whose full_state/epoch_E exists is deleted;
    - finally {ckpt}/.hpc_sft_staging is removed.
    Must not run while a save is in progress for this ckpt_dir.
    """
    ckpt_dir = os.fspath(ckpt_dir)
    root = staging_root(ckpt_dir)
    if not os.path.lexists(root):
        return []
    full_state = os.path.join(ckpt_dir, "full_state")
    staged_parent = os.path.join(root, "full_state")
    aside_parent = os.path.join(root, "replaced")
    done = []
    for name in sorted(os.listdir(staged_parent)) if os.path.isdir(staged_parent) else ():
        staged = os.path.join(staged_parent, name)
        problem = marker_problem(staged) if _EPOCH_DIR.fullmatch(name) else "not an epoch_E name"
        if problem is None:
            publish(staged, os.path.join(full_state, name), os.path.join(aside_parent, name))
            done.append(f"published the complete staged state {name} (a crash interrupted its publish)")
        else:
            shutil.rmtree(staged, ignore_errors=True)
            done.append(f"deleted the torn staged state {name} ({problem})")
    for name in sorted(os.listdir(aside_parent)) if os.path.isdir(aside_parent) else ():
        aside, final = os.path.join(aside_parent, name), os.path.join(full_state, name)
        if os.path.lexists(final):
            shutil.rmtree(aside, ignore_errors=True)
            done.append(f"deleted the replaced state {name} (its successor is in place)")
        else:
            os.makedirs(full_state, exist_ok=True)
            os.rename(aside, final)
            _fsync_path(full_state, directory=True)
            done.append(f"moved the replaced state {name} back to full_state/ (no successor)")
    shutil.rmtree(root, ignore_errors=True)
    for line in done:
        (log or _log)(f"{ckpt_dir}: {line}")
    return done


def _log(message: str) -> None:
    print(f"hpc-sft shim: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# worker patches (installed by hpc_sft_shim.activate when HPC_SFT_EXACT_RESUME is set)
# --------------------------------------------------------------------------


def install() -> None:
    from hpc_sft_shim.hooks import on_import

    on_import("instructlab.training", _check_supported)
    on_import("instructlab.training.accelerator", patch_accelerator)
    on_import("instructlab.training.on_demand_checkpoint", patch_on_demand_checkpoint)
    on_import("instructlab.training.utils", patch_utils)


def _check_supported(_module) -> None:
    from hpc_sft_shim.gate import require_tested

    require_tested("HPC_SFT_EXACT_RESUME")


def patch_accelerator(module) -> None:
    """accelerator.py:290 Accelerator.take_optimizer_step: count applied steps per epoch."""
    from .hooks import call_after

    call_after(module.Accelerator, "take_optimizer_step", _count_step)


def _count_step(accelerator, *_args) -> None:
    epoch = accelerator.train_loader.sampler.epoch  # EpochSampler.set_epoch(epoch), main_ds.py:245
    _applied_steps[epoch] = _applied_steps.get(epoch, 0) + 1


def completed_steps(args, epoch: int) -> int:
    """Batches of ``epoch`` whose optimizer step is done, batches skipped on resume included."""
    skipped = 0
    if epoch == getattr(args, "current_epoch", 0):  # the epoch this process resumed into
        skipped = int(getattr(args, "last_step", 0) or 0)
    return skipped + _applied_steps.get(epoch, 0)


def patch_on_demand_checkpoint(module) -> None:
    """on_demand_checkpoint.py:267 save_on_demand_checkpoint: save the per-epoch step count."""
    import inspect

    original = module.save_on_demand_checkpoint
    signature = inspect.signature(original)

    @functools.wraps(original)
    def save_on_demand_checkpoint(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        train_args, epoch = bound.arguments["args"], bound.arguments["epoch"]
        given = bound.arguments.get("global_step")
        bound.arguments["global_step"] = completed_steps(train_args, epoch)
        if int(os.environ.get("RANK", "0")) == 0:
            _log(f"exact resume: on-demand save in epoch {epoch} after "
                 f"{bound.arguments['global_step']} completed step(s) of that epoch "
                 f"(instructlab-training passed global_step={given})")
        return original(*bound.args, **bound.kwargs)

    module.save_on_demand_checkpoint = save_on_demand_checkpoint


def barrier() -> None:
    """All ranks meet here (a no-op without torch.distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def patch_utils(module) -> None:
    """utils.py:861 save_full_state (staged + published) and :916 load_latest_full_state (repair)."""
    _wrap_save_full_state(module)
    _wrap_load_latest_full_state(module)


def _wrap_save_full_state(module) -> None:
    import inspect

    original = module.save_full_state
    signature = inspect.signature(original)

    @functools.wraps(original)
    def save_full_state(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        staged_save(original, bound)

    module.save_full_state = save_full_state


def staged_save(original, bound) -> None:
    """Let instructlab-training write the state under the staging root, then mark and publish it (rank 0)."""
    import copy

    train_args, accelerator = bound.arguments["args"], bound.arguments["accelerator"]
    epoch, ckpt = bound.arguments["epoch"], os.fspath(train_args.output_dir)
    root = staging_root(ckpt)
    staged = os.path.join(root, "full_state", f"epoch_{epoch}")
    main = accelerator.is_main_process
    if main and os.path.lexists(staged):
        shutil.rmtree(staged)  # a torn earlier attempt
    barrier()
    staged_args = copy.copy(train_args)
    staged_args.output_dir = root  # ILT writes {output_dir}/full_state/epoch_E
    bound.arguments["args"] = staged_args
    started = time.monotonic()
    original(*bound.args, **bound.kwargs)
    barrier()  # every rank has written its files
    faults.pause("PAUSE_BEFORE_PUBLISH", "pausing before publishing a full state")  # counts as save time
    seconds = round(time.monotonic() - started, 3)
    if main:
        metadata = {"current_epoch": epoch, "samples_seen": bound.arguments["samples_seen"],
                    "global_step": bound.arguments["global_step"]}
        write_marker(staged, metadata, {"world_size": int(os.environ.get("WORLD_SIZE", "1")),
                                        "save_seconds": seconds})
        publish(staged, os.path.join(ckpt, "full_state", f"epoch_{epoch}"),
                os.path.join(root, "replaced", f"epoch_{epoch}"))
        shutil.rmtree(root, ignore_errors=True)
        _log(f"published full_state/epoch_{epoch} {metadata}")
        saves.prune(full_state_dirs(ckpt), saves.keep_from_env(), marker_problem, _log)
    barrier()


def full_state_dirs(ckpt: str) -> list:
    """full_state/epoch_E paths, newest (largest E: what instructlab-training resumes from) first."""
    root = os.path.join(ckpt, "full_state")
    names = [n for n in os.listdir(root) if _EPOCH_DIR.fullmatch(n)] if os.path.isdir(root) else []
    return [os.path.join(root, n) for n in sorted(names, key=lambda n: int(n.rsplit("_", 1)[1]), reverse=True)]


def _wrap_load_latest_full_state(module) -> None:
    original = module.load_latest_full_state

    @functools.wraps(original)
    def load_latest_full_state(args, accelerator, *rest, **kwargs):
        if accelerator.is_main_process:
            repair_full_states(args.output_dir)
        barrier()
        return original(args, accelerator, *rest, **kwargs)

    module.load_latest_full_state = load_latest_full_state
