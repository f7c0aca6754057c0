"""Signal handlers hpc-sft (or instructlab-training) installs never leak into forked helper processes."""
from __future__ import annotations

import subprocess
import sys
import textwrap

POOL_TERMINATE = textwrap.dedent("""
    import multiprocessing as mp, signal, time
    from hpc_sft.signals import SignalRecorder
    SignalRecorder().install()
    def dispositions(_):
        return [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)]
    pool = mp.Pool(2)
    print(pool.map(dispositions, range(2))[0], flush=True)
    pool.map_async(time.sleep, [600, 600])
    time.sleep(1)
    pool.terminate()  # SIGTERM to workers busy in a task: they must end
    pool.join()
    print("terminated", flush=True)
""")


def test_pool_terminate_ends_workers_forked_after_the_recorder(tmp_path):
    """The data-processing deadlock: workers forked after SignalRecorder.install() swallowed SIGTERM."""
    script = tmp_path / "pool.py"
    script.write_text(POOL_TERMINATE)
    try:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("Pool.terminate() did not end its workers: they inherited hpc-sft's SIGTERM handler")
    assert out.returncode == 0, out.stderr
    first, last = out.stdout.splitlines()[0], out.stdout.splitlines()[-1]
    # TERM default, USR1/USR2 ignored (only the training parent reacts to Slurm's warning), INT as Python
    # starts it (its KeyboardInterrupt handler, or ignored when the shell started us in the background)
    term, usr1, usr2, sigint = first.strip("[]").split(", ", 3)
    assert (term, usr1, usr2) == ("<Handlers.SIG_DFL: 0>", "<Handlers.SIG_IGN: 1>", "<Handlers.SIG_IGN: 1>"), first
    assert sigint in ("<built-in function default_int_handler>", "<Handlers.SIG_IGN: 1>"), first
    assert last == "terminated"


def test_parent_keeps_its_handlers_after_a_fork(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import os, signal
        from hpc_sft.signals import SignalRecorder
        rec = SignalRecorder().install()
        pid = os.fork()
        if pid == 0:
            os._exit(0 if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else 1)
        _, status = os.waitpid(pid, 0)
        os.kill(os.getpid(), signal.SIGUSR2)
        print(os.waitstatus_to_exitcode(status), rec.received)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["0", "SIGUSR2"], out.stdout + out.stderr


SHIMMED_CHILD = "import signal, time; time.sleep(0.5); print(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))"


def test_a_warning_right_after_torchrun_is_forked_cannot_kill_it():
    """Slurm's USR2 goes to every process of the step: one that lands before the child's Python has run the
    shim (which ignores it) killed torchrun (exit -12; seen on the cluster 25 ms after the fork)."""
    import os
    import signal

    from hpc_sft.launch import Launch, spawn_shielded, worker_env

    env = {**os.environ, **worker_env(Launch(nproc_per_node=1))}
    plain = subprocess.Popen([sys.executable, "-c", SHIMMED_CHILD], env=env, stdout=subprocess.PIPE, text=True)
    plain.send_signal(signal.SIGUSR2)
    assert plain.wait(timeout=60) == -signal.SIGUSR2  # the race the fix closes: a plain fork dies of it
    child = spawn_shielded([sys.executable, "-c", SHIMMED_CHILD], env, stdout=subprocess.PIPE, text=True)
    child.send_signal(signal.SIGUSR2)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out.strip() == "[]", out  # survived, and nothing stays blocked after the shim
