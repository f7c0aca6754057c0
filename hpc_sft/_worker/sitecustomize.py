"""hpc-sft start-up shim: patches instructlab-training workers when HPC_SFT_* vars ask."""

import os
import sys

_FEATURE_VARS = ("HPC_SFT_CPU", "HPC_SFT_PARAM_DIGEST_DIR", "HPC_SFT_EXACT_RESUME", "HPC_SFT_EQUAL_MINIBATCHES",
                 "HPC_SFT_HF_KEYS", "HPC_SFT_BEAT_DIR", "HPC_SFT_TRACKING")
_WORKER_SCRIPT = "/instructlab/training/main_ds.py"


def _is_ilt_worker() -> bool:
    argv = getattr(sys, "argv", None) or [""]
    return os.path.abspath(argv[0]).replace(os.sep, "/").endswith(_WORKER_SCRIPT)


def _shield_signals() -> None:
    """HPC_SFT_SHIELD_SIGNALS=USR1,USR2: every process started with the shim (torchrun too) ignores them.

    A signal sent to a whole Slurm step then reaches only the training parent. The parent starts torchrun
    with them blocked (so that one arriving before this runs cannot kill it); once ignored they are unblocked.
    """
    spec = os.environ.get("HPC_SFT_SHIELD_SIGNALS", "")
    if not spec.strip():
        return
    import signal

    ignored = []
    for name in filter(None, (part.strip().upper() for part in spec.split(","))):
        sig = getattr(signal, name if name.startswith("SIG") else "SIG" + name, None)
        if isinstance(sig, signal.Signals) and sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_IGN)
            ignored.append(sig)
        else:
            sys.stderr.write(f"hpc-sft shim: HPC_SFT_SHIELD_SIGNALS: cannot ignore {name!r}\n")
    signal.pthread_sigmask(signal.SIG_UNBLOCK, ignored)


def _activate() -> None:
    if not any(os.environ.get(v) for v in _FEATURE_VARS) or not _is_ilt_worker():
        return
    from hpc_sft_shim import activate

    activate()


def _faults() -> None:
    if any(name.startswith("HPC_SFT_FAULT_") for name in os.environ):
        from hpc_sft_shim import faults

        faults.install_launcher()


def _mark_started() -> None:
    """HPC_SFT_WORKER_STARTED_DIR (benchmarks): each torchrun worker notes when it started, i.e. when the
    rendezvous let it go, as {dir}/rankR (a UNIX time)."""
    folder = os.environ.get("HPC_SFT_WORKER_STARTED_DIR")
    if folder and os.environ.get("RANK") is not None and os.environ.get("TORCHELASTIC_RUN_ID") is not None:
        import time

        with open(os.path.join(folder, f"rank{os.environ['RANK']}"), "w") as fh:
            fh.write(repr(time.time()))


def _rank_prefix() -> None:
    from hpc_sft_shim import rankprefix

    rankprefix.install()


def _chain() -> None:
    from hpc_sft_shim.chain import run_next_sitecustomize

    run_next_sitecustomize(os.path.dirname(os.path.abspath(__file__)))


try:
    _shield_signals()
    _mark_started()
    _rank_prefix()
finally:
    try:
        _activate()
        _faults()
    finally:
        _chain()
