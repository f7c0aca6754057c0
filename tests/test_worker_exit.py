"""A finished CPU worker leaves right after main_ds destroys its process group: nothing freed can hang it."""
import json
import subprocess
import textwrap

from tests.helpers import run_as_worker

# Shaped like main_ds.py's end: queued metrics lines, barrier(), destroy_process_group(), then main() returns and
# frees its locals. The object below blocks when freed, as the DDP Reducer does when it frees gloo's process group
# holding the GIL while a gloo thread waits for the GIL (seen once: a finished run hung for ever).
SCRIPT = textwrap.dedent('''
    import atexit, sys, time
    import torch.distributed as dist
    from instructlab.training.async_logger import AsyncStructuredLogger

    out = sys.argv[1]
    atexit.register(lambda: open(f"{out}/atexit-ran", "w").close())


    class FreedLikeTheReducer:
        def __del__(self):
            time.sleep(3600)


    def main():
        dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=0, world_size=1)
        model = FreedLikeTheReducer()
        metrics = AsyncStructuredLogger(f"{out}/metrics.jsonl")
        for step in range(3000):
            metrics.log_sync({"step": step})
        print("trained", flush=True)
        dist.barrier()
        dist.destroy_process_group()


    main()
''')


def test_a_finished_worker_leaves_with_its_metrics_and_exit_handlers(tmp_path):
    try:
        run = run_as_worker(tmp_path, SCRIPT, {"HPC_SFT_CPU": "1"}, timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the worker hung after destroy_process_group(): {exc.stderr}") from None
    assert run.returncode == 0 and "trained" in run.stdout, run.stderr
    assert (tmp_path / "atexit-ran").is_file()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["step"] for line in lines) == list(range(3000))
