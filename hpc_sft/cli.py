"""The `hpc-sft` command line (click); the only module that prints. Login-node commands never import torch."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from . import executors, jobs, registry
from .config import recipe as recipes
from .errors import HpcSftError


class Group(click.Group):
    """Turns hpc-sft errors into one line on stderr and a non-zero exit code (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HpcSftError as exc:
            click.echo(f"hpc-sft: error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=Group)
@click.version_option(package_name="hpc-sft")
def main() -> None:
    """Fine-tune LLMs on Slurm (or here) from one recipe.toml; requeue-safe."""


def set_verbose(verbose: bool) -> None:
    """--verbose: the local executor streams the backend's output (HPC_SFT_VERBOSE, read by its console)."""
    if verbose:
        os.environ["HPC_SFT_VERBOSE"] = "1"


def describe_plan(plan, checks=None) -> str:
    """The dry run's text: the executor's plan, then what the pre-submit checks did."""
    return "\n".join([plan.describe(), *(checks.lines() if checks else [])])


@main.command()
@click.argument("recipe", type=click.Path())
@click.option("--dry-run", is_flag=True, help="Validate and print what would be submitted; submit nothing.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key, e.g. sft.num_epochs=2")
@click.option("--verbose", is_flag=True, help="Local runs: stream the backend's full output (default: one progress line).")
def submit(recipe: str, dry_run: bool, overrides: tuple[str, ...], verbose: bool) -> None:
    """Validate RECIPE, then train here (executor=local) or queue a Slurm job (executor=slurm)."""
    set_verbose(verbose)
    from . import pipeline
    from .result import TrainingResult

    parsed = recipes.read(recipe, overrides)
    with recipes.located(parsed):
        values = recipes.sft_values(parsed)
        if values.get("sweep") is not None:
            prepared = pipeline.prepare_sweep(*pipeline.validate_sweep(values), dry_run=dry_run)
        else:
            prepared = pipeline.prepare(recipes.build(parsed), dry_run=dry_run)
    if dry_run:
        click.echo(describe_plan(prepared.plan, prepared.checks))
        return
    for warning in prepared.checks.warnings:
        click.echo(f"hpc-sft: warning: {warning}", err=True)
    if isinstance(prepared, pipeline.PreparedSweep):
        echo_sweep(pipeline.submit_sweep(prepared))
        return
    outcome = pipeline.submit(prepared)
    if isinstance(outcome, TrainingResult):
        click.echo(f"finished: checkpoint {outcome.checkpoint_path} ({outcome.samples_seen} samples seen)")
        return
    click.echo(f"submitted job {outcome.job_id} ({outcome.nodes} node(s))")
    click.echo(f"logs:   {outcome.folder}")
    click.echo(f"follow: hpc-sft logs {outcome.job_id} --follow   |   hpc-sft status {outcome.job_id}")
    if getattr(outcome, "requeue_allowed", None) is False:
        click.echo(f"note:   this site clears --requeue on job {outcome.job_id}: if it is preempted or reaches its "
                   "time limit, hpc-sft continues the run as a new job (status, logs and cancel follow it under "
                   f"{outcome.job_id})")


def echo_sweep(handle) -> None:
    click.echo(f"submitted sweep {handle.job_id}: {len(handle)} tasks in job array(s) {', '.join(handle.array_ids)}")
    for task in handle:
        click.echo(f"  {task.job_id}  {task.ckpt_output_dir}")
    click.echo(f"follow: hpc-sft status {handle.job_id}   |   hpc-sft logs {handle[0].job_id} --follow")


@main.command()
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(job: str | None, as_json: bool) -> None:
    """State and progress of JOB, a local run id, or the ckpt_output_dir DIR (default: the last run)."""
    from .progress import dir_status, job_status, render_status

    info = dir_status(Path(job)) if job is not None and Path(job).is_dir() else job_status(jobs.lookup(job))
    click.echo(json.dumps(info, indent=1) if as_json else render_status(info))


def _record(job: str | None) -> dict:
    """The record of JOB, of the newest run writing DIR when JOB is a directory, or of the last run."""
    if job is not None and Path(job).is_dir():
        rec = jobs.for_dir(job)
        if rec is None:
            raise HpcSftError(f"no run of {job} is recorded", "pass a job id (`hpc-sft status` shows the last)")
        return rec
    return jobs.lookup(job)


@main.command()
@click.argument("job", required=False)
@click.option("--node", default=0, show_default=True, help="Which node's log (Slurm jobs).")
@click.option("--follow", is_flag=True, help="Keep printing until the job ends.")
@click.option("--stderr", is_flag=True, help="Show the stderr log instead of stdout (Slurm jobs).")
@click.option("--all", "every", is_flag=True, help="Every node's stdout and stderr as one stream in time order, "
              "each line prefixed with [nodeN] or [nodeN err].")
def logs(job: str | None, node: int, follow: bool, stderr: bool, every: bool) -> None:
    """Print the log of one node of JOB, or of a local run (id or ckpt_output_dir; default: the last run)."""
    rec = _record(job)
    executor = executors.for_record(rec)
    paths = log_paths(executor, rec) if every else {"": executor.log_path(rec, node, stderr)}
    offsets = dict.fromkeys(paths, 0)
    while True:
        chunks = {name: _read_from(path, offsets, name) for name, path in paths.items()}
        _echo_chunks(chunks, merged=every)
        if not follow or not executor.job_state(jobs.lookup(rec["job_id"])).live:
            break
        time.sleep(2)
    for path in paths.values():
        if not path.is_file():
            click.echo(f"(no log yet at {path})", err=True)


def log_paths(executor, rec: dict) -> dict:
    """label -> log file of every node of a job, stdout and stderr (one file where they are the same)."""
    from .logmerge import label

    found: dict = {}
    for node in range(int(rec.get("nodes") or 1)):
        for err in (False, True):
            path = executor.log_path(rec, node, err)
            if path not in found.values():
                found[label(node, err)] = path
    return found


def _read_from(path: Path, offsets: dict, name: str) -> str:
    if not path.is_file():
        return ""
    with path.open(errors="replace") as fh:
        fh.seek(offsets[name])
        chunk = fh.read()
        offsets[name] = fh.tell()
    return chunk


def _echo_chunks(chunks: dict, merged: bool) -> None:
    if not merged:
        click.echo(chunks[""], nl=False)
        return
    from .logmerge import merge

    for line in merge({name: text for name, text in chunks.items() if text}):
        click.echo(line)


@main.command()
@click.argument("job")
def cancel(job: str) -> None:
    """Cancel JOB (its checkpoints stay); a local run gets SIGTERM, saves a full state and stops."""
    rec = _record(job)
    click.echo(executors.for_record(rec).cancel(rec))


@main.command()
@click.argument("recipe", type=click.Path())
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("-o", "--output", type=click.Path(), help="Write to this file instead of stdout.")
def render(recipe: str, overrides: tuple[str, ...], output: str | None) -> None:
    """Print a standalone sbatch script for RECIPE (for scripts kept in git)."""
    from .executors.slurm.render import sbatch_script

    config = recipes.load(recipe, overrides + ("executor=slurm",))
    text = sbatch_script(executors.get("slurm").plan(config), Path(recipe).name)
    _write_or_echo(text, output)


@main.command()
@click.argument("path", default="recipe.toml", type=click.Path())
@click.option("--executor", type=click.Choice(list(registry.EXECUTORS)), default="slurm", show_default=True)
def init(path: str, executor: str) -> None:
    """Write a commented recipe to PATH (never overwrites)."""
    from .config.skeleton import recipe_text

    _write_or_echo(recipe_text(Path(path).name, executor), path, overwrite=False)


def _write_or_echo(text: str, path: str | None, overwrite: bool = True) -> None:
    if path is None or path == "-":
        click.echo(text, nl=False)
        return
    target = Path(path)
    if target.exists() and not overwrite:
        raise HpcSftError(f"{target} exists; not overwriting it", "choose another path or remove it")
    target.write_text(text)
    click.echo(f"wrote {target}")


@main.command()
@click.argument("model_id")
@click.option("--revision", default=None, help="Branch, tag or commit (default: main).")
def fetch(model_id: str, revision: str | None) -> None:
    """Download MODEL_ID into the Hugging Face cache (HF_HOME), on a machine with network, so that jobs whose
    compute nodes are offline can use it as model_path."""
    from .config import hub

    click.echo(f"fetching {model_id} into {hub.cache_dir()} ...", err=True)
    path = hub.fetch(model_id, revision)
    click.echo(path)
    click.echo(f"cached; use model_path = \"{model_id}\" (resolved to the snapshot above when you submit)", err=True)


@main.command()
@click.argument("target")
@click.option("-o", "--output", default="loss.png", show_default=True, type=click.Path(),
              help="The image to write (PNG; another suffix, e.g. .svg or .pdf, picks that format).")
def plot(target: str, output: str) -> None:
    """Plot loss and learning rate against samples seen for TARGET: a job id, a sweep or a ckpt_output_dir.

    Two panels share the x axis (samples seen; epochs on top): the training loss per step (with a moving
    average over it for long runs) and the learning rate, of the steps the final model trained through (a
    step logged again after a resume counts once: the later record). Each requeue or stop is a dashed line
    with a marker on the curve and its reason (time limit or preemption, hang, node lost, Ctrl-C). A sweep
    (a folder with sweep.json, or its job id) overlays its tasks, labelled by name. Needs matplotlib:
    pip install 'hpc-sft[plot]'."""
    from . import plot as plotting

    found = plotting.resolve(target)
    for missing in found.missing:
        click.echo(f"hpc-sft: warning: no metrics yet for {missing}; left out", err=True)
    click.echo(f"wrote {plotting.draw(found.curves, Path(output), found.title)} ({found.title})")


@main.command()
@click.option("--dir", "folder", default="runs/demo", show_default=True, type=click.Path(),
              help="Where the tiny model, data, recipe and checkpoints go.")
@click.option("--epochs", default=2, show_default=True)
@click.option("--verbose", is_flag=True, help="Stream the backend's full output (default: one progress line).")
def demo(folder: str, epochs: int, verbose: bool) -> None:
    """Build a tiny model and data set locally, then fine-tune it on CPU with the local executor."""
    set_verbose(verbose)
    from .demo import run_demo

    result = run_demo(Path(folder), epochs, echo=click.echo)
    click.echo(f"demo finished: checkpoint {result.checkpoint_path} ({result.samples_seen} samples seen)")


if __name__ == "__main__":
    main()
