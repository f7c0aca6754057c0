"""The job handle on the real cluster: after a requeue, only the current attempt decides the outcome."""
import os
import time

import pytest

from hpc_sft.executors.slurm.job import SlurmJob
from hpc_sft.executors.slurm.leaving import requeue
from hpc_sft.executors.slurm.node_task import forget_earlier_result
from hpc_sft.result import TrainingResult

pytestmark = [pytest.mark.slurm]


def fail_then_finish_late(result: TrainingResult):
    """Attempt 0: node 1 raises, node 0 requeues the job. Attempt 1: node 0 returns at once, node 1 last."""
    forget_earlier_result()
    restart, rank = int(os.environ.get("SLURM_RESTART_COUNT") or 0), int(os.environ["SLURM_PROCID"])
    if restart == 0:
        if rank == 1:
            raise RuntimeError("node 1 of the first attempt fails")
        import submitit

        failed = submitit.JobEnvironment().paths.folder / f"{os.environ['SLURM_JOB_ID']}_1_result.pkl"
        deadline = time.monotonic() + 120
        while not failed.is_file():  # node 1's error result is written
            assert time.monotonic() < deadline, f"no {failed}"
            time.sleep(0.2)
        requeue(os.environ["SLURM_JOB_ID"])
        raise SystemExit(0)
    if rank == 1:
        time.sleep(15)
        return None
    return result


def test_an_earlier_attempts_failure_never_decides_the_outcome(slurm_cluster, tmp_path):
    import submitit

    folder = tmp_path / "slurm" / "%j"
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    executor.update_parameters(nodes=2, ntasks_per_node=1, time=5, partition="main",
                               additional_parameters={"requeue": True})
    expected = TrainingResult(tmp_path, tmp_path / "hf_format" / "samples_1", 1, None, restarts=1)
    submitted = executor.submit(fail_then_finish_late, expected)
    job = SlurmJob(submitted.job_id, tmp_path / "slurm" / submitted.job_id, 2)
    assert job.wait(timeout_s=240) == expected  # failed with "job N failed (RUNNING)" while node 1 still ran
    assert job.state == "COMPLETED" and job.done()
