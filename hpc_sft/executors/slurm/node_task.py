"""NodeTask: run once per node: Slurm environment -> rendezvous -> data once -> backend -> finish or requeue."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

from ... import datacache, registry
from ...config import hub
from ...errors import ConfigError, HpcSftError, TrainingError, with_fix
from ...launch import Launch, data_step, finalize, launch_container
from ...requeue import Decision, decide, decide_in_step, resubmit_reason
from ...result import TrainingResult
from ...rundir import lock as ckpt_lock
from ...rundir import settings as run_settings
from ...rundir.layout import result_from_disk
from ...rundir.status import cancelled_chains, read_status, record_stop, record_successor
from ...signals import SignalRecorder, leave_quietly
from . import client, leaving, watchdog
from .datawatch import DataHang, DataWatch
from .env import Rendezvous, SlurmEnv, rendezvous

log = logging.getLogger("hpc_sft.node")
PLAN_TAG = "HPC_SFT_NODE_PLAN"


def slurm_launch(config, rdzv: Rendezvous) -> Launch:
    """The launch for one node of an allocation (device and process count still unresolved)."""
    return Launch(nproc_per_node=config.nproc_per_node, nnodes=rdzv.nnodes, node_rank=rdzv.node_rank,
                  rdzv_id=rdzv.rdzv_id, rdzv_endpoint=rdzv.rdzv_endpoint, device=config.device or "auto",
                  process_data=False, on_demand_checkpointing=True, container=launch_container(config))


def cpu_threads(launch: Launch, env: SlurmEnv) -> Launch:
    """CPU training: OMP_NUM_THREADS = the CPUs Slurm gave the job on this node / its processes, unless set.
    Left alone, accelerate gives every process all the machine's cores, and a job that got part of a node
    (or nodes that share cores) runs several times slower."""
    if launch.device != "cpu" or "OMP_NUM_THREADS" in os.environ or not env.cpus_on_node:
        return launch
    threads = max(1, env.cpus_on_node // max(1, int(launch.nproc_per_node)))
    return replace(launch, env=(*launch.env, ("OMP_NUM_THREADS", str(threads))))


def plan_record(launch: Launch, host: str) -> dict:
    """What this node derived, as logged (and compared by tests with the login-side plan)."""
    return {"host": host, "nnodes": launch.nnodes, "node_rank": launch.node_rank, "rdzv_id": str(launch.rdzv_id),
            "rdzv_endpoint": launch.rdzv_endpoint, "nproc_per_node": launch.nproc_per_node, "device": launch.device,
            "threads": dict(launch.env).get("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS")),
            "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE")}


def check_resolves(endpoint: str) -> None:
    """Fail loudly if node 0's host name does not resolve here (never fall back to localhost)."""
    host = endpoint.rsplit(":", 1)[0]
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise ConfigError("rdzv_endpoint", f"node 0's host {host!r} does not resolve on {socket.gethostname()} "
                          f"({exc})", "ask your admin to make node names resolvable between nodes") from None


def data_wait_s() -> float:
    return float(os.environ.get("HPC_SFT_DATA_WAIT_S", "7200"))


def data_cache_path(config, backend) -> Optional[Path]:
    """Where node 0 publishes the tokenized data (None: the backend tokenizes in its training processes)."""
    if not backend.pretokenizes:
        return None
    root = Path(config.data_output_dir or Path(config.ckpt_output_dir) / "data")
    return datacache.cache_dir(root, datacache.cache_key(config, backend.version()))


def prepare_data(config, backend, node_rank: int, attempt: str = "local"):
    """Node 0 tokenizes once into a content-addressed cache; the others wait for it (and stop with node 0's
    reason if it fails). Backends that tokenize inside their training processes get the config unchanged."""
    path = data_cache_path(config, backend)
    if path is None:
        return config
    if node_rank == 0:
        built = datacache.build(path, data_step(config, backend))  # inside the image with slurm.container
    else:
        built = datacache.wait(path, data_wait_s(), attempt)
    return replace(config, data_output_dir=str(built))


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")


def go_offline() -> None:
    """Compute nodes never reach for the hub: model_path was resolved to a cached snapshot before queueing
    (a value set in the job's environment, e.g. by slurm.setup, is kept)."""
    for key, value in hub.OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def forget_earlier_result() -> None:
    """A requeued job keeps its id: remove this task's submitit result file from an earlier attempt, so
    that only this attempt's outcome is ever read (standalone sbatch scripts have none)."""
    if not os.environ.get("SUBMITIT_FOLDER"):
        return
    import submitit

    submitit.JobEnvironment().paths.result_pickle.unlink(missing_ok=True)


@dataclass(frozen=True)
class NodeTask:
    """Runs one node's share of a multi-node training job inside a Slurm allocation. `in_step`: started by
    executor='srun' in the user's allocation, so an interrupted run stops (saved) rather than requeue it.
    Where the site forbids requeue, node 0 queues the run's next job with `successor(config, chain, exclude)`
    (chain: the run's jobs so far, first first); `chain` here: the jobs before this one."""

    config: object
    in_step: bool = False
    chain: tuple[str, ...] = ()
    successor: Optional[Callable[..., str]] = None

    def restarts(self, env: SlurmEnv) -> int:
        """Requeues of this job plus the jobs of the chain before it: what max_requeues bounds."""
        return len(self.chain) + env.restart_count

    def __call__(self) -> Optional[TrainingResult]:
        setup_logging()
        go_offline()
        forget_earlier_result()
        recorder = SignalRecorder().install()
        env = SlurmEnv.from_environ()
        rdzv = rendezvous(env)
        check_resolves(rdzv.rdzv_endpoint)
        launch = cpu_threads(finalize(slurm_launch(self.config, rdzv)), env)
        print(PLAN_TAG, json.dumps(plan_record(launch, socket.gethostname())), flush=True)
        ckpt, lead = Path(self.config.ckpt_output_dir), rdzv.node_rank == 0
        backend = registry.backend_class(self.config.backend)()
        attempt = env.attempt  # what the other nodes wait for
        if lead:
            with datacache.heartbeat(data_cache_path(self.config, backend), attempt), self.data_watch(ckpt, env):
                self.prepare_lead(ckpt, env, backend)
                config = prepare_data(self.config, backend, 0)
        else:
            config = prepare_data(self.config, backend, rdzv.node_rank, attempt)
        hang, failure = None, None
        try:
            if recorder.received is None:
                hang = watchdog.watched_training(backend, config, launch, ckpt, attempt)
            else:
                log.info("got %s before training started; not starting", recorder.received)
        except HpcSftError as exc:
            if not lead or rdzv.nnodes == 1:
                raise
            failure = exc  # a peer's death fails node 0's training too: was a node lost?
        finally:
            leaving.mark_stopped(ckpt, attempt, rdzv.node_rank)
        if failure is not None:
            hang = leaving.lost_nodes(ckpt, env, rdzv.nnodes)
            if hang is None:
                raise failure
            log.warning("%s; training failed on node 0 with: %s", hang, failure)
        return self.conclude(backend, env, rdzv, recorder.received, hang)

    @contextlib.contextmanager
    def data_watch(self, ckpt: Path, env: SlurmEnv) -> Iterator[None]:
        """Node 0's data phase under the data watchdog: a hang is recorded as the job's end (a requeue would
        hang again) and leaves the directory free for a corrected rerun."""
        try:
            with DataWatch(self.config.slurm.hang_timeout_s):
                yield
        except DataHang as exc:
            record_stop(ckpt, env.job_id, self.restarts(env), Decision("give_up", f"hang: {exc}"), None, None)
            ckpt_lock.release(ckpt)
            raise

    def prepare_lead(self, ckpt: Path, env: SlurmEnv, backend) -> None:
        """Node 0 before training: own the directory, check and record the settings, tidy torn saves."""
        ckpt_lock.acquire(ckpt, env.job_id)
        run_settings.check(self.config, backend.free_kwargs)  # a rerun submitted meanwhile may differ
        run_settings.record(self.config, backend.free_kwargs)
        backend.tidy_checkpoints(ckpt, log.warning)
        watchdog.forget_other_attempts(ckpt, env.attempt)

    def decide(self, state, env: SlurmEnv, stops: list, why: str, lead: bool) -> Decision:
        if self.in_step:
            return decide_in_step(state, self.config.num_epochs or 1, why)
        can_requeue = not lead or client.can_requeue(env.job_id)  # only node 0 requeues or resubmits
        decision = decide(state, self.config.num_epochs or 1, self.restarts(env), self.config.slurm.max_requeues,
                          stops, why, can_requeue)
        if decision.action == "resubmit" and self.successor is None:
            return Decision("give_up", with_fix(f"{decision.why}; a standalone "
                                                "script cannot queue its next job", "submit it again with sbatch "
                                                "(it resumes where it stopped), or use `hpc-sft submit`"))
        return decision

    def chain_ids(self, env: SlurmEnv) -> tuple[str, ...]:
        return (*self.chain, env.job_id)

    def resubmit(self, ckpt: Path, env: SlurmEnv, decision: Decision) -> Decision:
        """Node 0, the site forbids requeue: queue the next job (after this one ends, without stuck hosts) and
        hand it the directory; or say why not (the user cancelled the run, or sbatch refused)."""
        chain = self.chain_ids(env)
        if chain[0] in cancelled_chains(ckpt):
            return Decision("stop", f"{decision.why}; the run was cancelled: no next job")
        try:
            successor = self.successor(self.config, chain, tuple(watchdog.stuck_hosts(ckpt, env.attempt)))
        except HpcSftError as exc:
            return Decision("give_up", f"{decision.why}; could not queue the next job: {exc}")
        record_successor(ckpt, (*chain, successor))
        ckpt_lock.hand_over(ckpt, successor)
        if chain[0] in cancelled_chains(ckpt):  # cancelled meanwhile: `hpc-sft cancel` may not have seen it
            client.cancel(successor)
        log.info("queued job %s to continue this run (chain %s)", successor, " -> ".join((*chain, successor)))
        return replace(decision, reason=resubmit_reason(decision.why, decision.samples, f"job {successor}"))

    def conclude(self, backend, env: SlurmEnv, rdzv: Rendezvous, signal_name: Optional[str],
                 hang: Optional[str] = None) -> Optional[TrainingResult]:
        """Finished -> result; interrupted -> node 0 requeues once every node has stopped, and every node
        exits without a result."""
        ckpt, lead = Path(self.config.ckpt_output_dir), rdzv.node_rank == 0
        state, path = backend.progress(self.config)
        stops = [s for s in read_status(ckpt).get("stops", []) if s.get("job_id") in self.chain_ids(env)]
        why = hang or f"interrupted ({signal_name or 'checkpoint signal'}) at restart {self.restarts(env)}"
        decision = self.decide(state, env, stops, why, lead)
        log.info("decision: %s (%s)", decision.action, decision.reason)
        leave_quietly()
        if lead and decision.action in ("requeue", "resubmit"):
            leaving.wait_until_stopped(ckpt, env, rdzv.nnodes)  # then every node's hang record is written
            decision = watchdog.with_suspects(decision, ckpt, env.attempt)
        if lead and decision.action == "resubmit":
            decision = self.resubmit(ckpt, env, decision)
        if lead:
            record_stop(ckpt, env.job_id, self.restarts(env), decision, state, str(path) if path else None)
            if decision.action not in ("requeue", "resubmit"):
                ckpt_lock.release(ckpt)
        if decision.action == "give_up":
            raise TrainingError(decision.reason)
        if decision.action in ("requeue", "resubmit"):
            if lead and decision.action == "requeue":
                leaving.requeue_without_stuck(ckpt, env)
            raise SystemExit(0)  # no result now: the requeued run (or the next job) writes it
        if decision.action == "stop":
            return None  # saved; the srun executor reads the status record and says how to resume
        return result_from_disk(ckpt, self.restarts(env)) if lead else None
