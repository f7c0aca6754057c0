"""[sweep]: tasks from grid and list, their names and folders, every task validated before anything is queued,
errors that name the line, and the job arrays a sweep is cut into (pure; the real cluster: test_sweep_slurm)."""
import pytest

from hpc_sft import pipeline
from hpc_sft.config import recipe as recipes
from hpc_sft.config import sweep as sweeps
from hpc_sft.errors import ConfigError, MissingPathError
from hpc_sft.executors.slurm.array import plan_sweep
from tests.helpers import write_recipe
from tests.test_cli import invoke


def test_grid_times_list_in_order_with_readable_names():
    sweep = sweeps.parse({"max_parallel": 2, "list": [{"num_epochs": 1}, {"num_epochs": 3, "warmup_steps": 5}],
                          "grid": {"learning_rate": [1e-5, 2e-4], "slurm.nodes": [1, 2]}})
    assert len(sweep.tasks) == 8 and sweep.max_parallel == 2
    assert sweep.keys == ("num_epochs", "learning_rate", "slurm.nodes", "warmup_steps")
    first, last = sweep.tasks[0], sweep.tasks[-1]
    assert first.name == "0-num_epochs=1-learning_rate=1e-05-slurm.nodes=1"
    assert last.name == "7-num_epochs=3-warmup_steps=5-learning_rate=0.0002-slurm.nodes=2"
    assert dict(last.values) == {"num_epochs": 3, "warmup_steps": 5, "learning_rate": 2e-4, "slurm.nodes": 2}


def test_task_values_own_folder_shared_data_cache_and_slurm_keys(tmp_path):
    sweep = sweeps.parse({"grid": {"learning_rate": [1e-3], "slurm.nodes": [2]}})
    base = {"ckpt_output_dir": str(tmp_path), "learning_rate": 1e-5, "slurm": {"nodes": 1, "time": "10"}}
    values = sweeps.task_values(base, sweep.tasks[0], tmp_path)
    assert values["ckpt_output_dir"] == str(tmp_path / sweep.tasks[0].name)
    assert values["data_output_dir"] == str(tmp_path / "data")
    assert values["learning_rate"] == 1e-3 and values["slurm"] == {"nodes": 2, "time": "10"}
    assert base["slurm"] == {"nodes": 1, "time": "10"}  # the base is not changed


@pytest.mark.parametrize("table, key, words", [
    ({"grid": {"learning_rate": []}}, "sweep.grid.learning_rate", "non-empty list"),
    ({"grid": {"ckpt_output_dir": ["a", "b"]}}, "sweep.grid.ckpt_output_dir", "cannot be swept"),
    ({"grid": {"slurm.nodez": [1]}}, "sweep.grid.slurm.nodez", "did you mean 'slurm.nodes'"),
    ({"grids": {"learning_rate": [1]}}, "sweep.grids", "use one of: sweep.grid, sweep.list, sweep.max_parallel"),
    ({"list": [{"num_epochs": 1}, {"num_epochs": 1}]}, "sweep", "tasks 0 and 1 are the same"),
    ({"max_parallel": 0, "grid": {"num_epochs": [1]}}, "sweep.max_parallel", "integer >= 1"),
    ({}, "sweep", "has no tasks"),
])
def test_bad_sweep_tables_name_the_key(table, key, words):
    with pytest.raises(ConfigError) as err:
        sweeps.parse(table)
    assert err.value.key == key and words in str(err.value)


def test_every_task_is_validated_and_the_error_names_task_and_line(tmp_path):
    ckpt = tmp_path / "runs"
    path = write_recipe(tmp_path, str(ckpt), extra="[sweep.grid]\nlearning_rate = [1e-4, -1.0]\n")
    with pytest.raises(ConfigError) as err:
        invoke_build(path)
    line = path.read_text().splitlines().index("learning_rate = [1e-4, -1.0]") + 1
    assert str(err.value).startswith(f"{path}:{line}: sweep.grid.learning_rate: task 1-learning_rate=-1: "
                                     "learning_rate: must be > 0")
    assert not ckpt.exists()


def test_a_missing_swept_path_names_the_task(tmp_path):
    path = write_recipe(tmp_path, str(tmp_path / "runs"), extra='[sweep]\nlist = [{ data_path = "nope.jsonl" }]\n')
    with pytest.raises(MissingPathError) as err:
        invoke_build(path)
    assert "sweep.list: task 0-data_path=nope.jsonl: data_path:" in str(err.value)
    assert str(tmp_path / "nope.jsonl") in str(err.value)  # resolved against the recipe's folder


def test_a_sweep_needs_the_slurm_executor(tmp_path):
    path = write_recipe(tmp_path, str(tmp_path / "runs"), executor="local",
                        extra="[sweep.grid]\nlearning_rate = [1e-4, 1e-3]\n")
    with pytest.raises(ConfigError) as err:
        invoke_build(path)
    assert "sweep: runs as Slurm job arrays, but executor is 'local'" in str(err.value)
    assert 'set executor = "slurm"' in str(err.value)


def invoke_build(path):
    parsed = recipes.read(path)
    with recipes.located(parsed):
        return pipeline.validate_sweep(recipes.sft_values(parsed))


def test_arrays_split_by_sbatch_options_and_max_array_size_and_chained_for_max_parallel(tmp_path):
    path = write_recipe(tmp_path, str(tmp_path / "runs"), extra=(
        "[sweep]\nmax_parallel = 2\n[sweep.grid]\nslurm.nodes = [1, 2]\nlearning_rate = [1e-4, 2e-4, 3e-4]\n"))
    sweep, configs = invoke_build(path)
    plan = plan_sweep(sweep, configs, tmp_path / "runs" / "slurm", max_array_size=2)
    assert [[t.index for t, _ in a.tasks] for a in plan.arrays] == [[0, 1], [2], [3, 4], [5]]
    assert [a.after for a in plan.arrays] == [None, 0, 1, 2]
    assert [c.slurm.nodes for a in plan.arrays for _, c in a.tasks] == [1, 1, 1, 2, 2, 2]
    script = plan.arrays[1].sbatch_script()
    assert "--array" not in script  # one task: a plain job (as submitit submits it)
    assert "#SBATCH --dependency='afterany:<job id of array 1>'" in script
    assert "#SBATCH --array=0-1%2" in plan.arrays[0].sbatch_script()
    assert plan.arrays[1].parameters("77")["additional_parameters"]["dependency"] == "afterany:77"
    unthrottled = plan_sweep(sweeps.parse({"grid": {"learning_rate": [1e-4, 2e-4]}}), configs[:2], tmp_path)
    assert [a.after for a in unthrottled.arrays] == [None] and unthrottled.arrays[0].throttle == 2


def test_dry_run_shows_the_task_table_and_the_array_script(tmp_path):
    path = write_recipe(tmp_path, str(tmp_path / "runs"), extra=(
        "[sweep]\nmax_parallel = 2\n[sweep.grid]\nlearning_rate = [1e-4, 1e-3]\neffective_batch_size = [8, 16]\n"))
    res = invoke("submit", path, "--dry-run")
    assert res.exit_code == 0, res.output
    assert "# sweep: 4 tasks in 1 job array(s)" in res.output and "at most 2 running at once" in res.output
    assert "#   3     1[3]   0.001          16" in res.output
    assert str(tmp_path / "runs" / "3-learning_rate=0.001-effective_batch_size=16") in res.output
    assert "#SBATCH --array=0-3%2" in res.output and "%A_%a_0_log.out" in res.output
    assert not (tmp_path / "runs").exists()
