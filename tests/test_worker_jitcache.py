"""instructlab-training's numba packers are compiled by the first worker and loaded from disk by the next ones."""
import json

from tests.helpers import run_as_worker

# A worker's first batch: both packers instructlab-training's sampler can use, then numba's own counters.
SCRIPT = '''
import json
from instructlab.training import batch_packer, padded_batch_packer

lengths = [50, 60, 70, 80, 90] * 8
batch_packer.batch_lengths_to_minibatches_lpt(lengths, 400, 2, 0)
padded_batch_packer.batch_lengths_to_minibatches_padded(lengths, 400, 2, 0)
core = (batch_packer._batch_to_minibatches_lpt_core, padded_batch_packer._padded_batch_packing_core)
print(json.dumps([[sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())] for f in core]))
'''


def counts(run) -> list:
    """[[cache hits, cache misses] per packer core] as the worker printed them."""
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_the_second_worker_start_loads_the_packers_instead_of_compiling(tmp_path):
    env = {"HPC_SFT_EXACT_RESUME": "1", "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    first = run_as_worker(tmp_path, SCRIPT, env, timeout=300)
    assert counts(first) == [[0, 1], [0, 1]], first.stdout  # compiled once each (a cache miss), and saved
    assert list((tmp_path / "numba").rglob("*.nbi")), "numba wrote no cache index"
    second = run_as_worker(tmp_path, SCRIPT, env, timeout=300)
    assert counts(second) == [[1, 0], [1, 0]], second.stdout  # loaded from the cache, nothing compiled
