"""Periodic full-state saves and retention: the policy both backends follow (stdlib only; the parent passes
it to instructlab-training's workers in the environment, the trl callback reads the config)."""

import os
import shutil
import time

EVERY_ENV = "HPC_SFT_FULL_STATE_EVERY_S"  # seconds between periodic full-state saves (unset or 0: none)
KEEP_ENV = "HPC_SFT_KEEP_FULL_STATES"  # complete full states kept, newest first (unset or 0: every one)


def env_for(every_min, keep) -> dict:
    """The environment that carries the policy of sft()'s full_state_every_min and keep_full_states."""
    return {EVERY_ENV: str(round(float(every_min or 0) * 60, 3)), KEEP_ENV: str(int(keep or 0))}


def every_s_from_env() -> float:
    return float(os.environ.get(EVERY_ENV) or 0)


def keep_from_env() -> int:
    return int(os.environ.get(KEEP_ENV) or 0)


class Clock:
    """When the next periodic save is due: every_s after the start of training or after the last full-state
    save of any kind (so an epoch-end save also resets it). Only rank 0's clock decides; the ranks vote."""

    def __init__(self, every_s: float) -> None:
        self.every_s, self.last = float(every_s or 0), time.monotonic()

    def due(self) -> bool:
        return self.every_s > 0 and time.monotonic() - self.last >= self.every_s

    def saved(self) -> None:
        self.last = time.monotonic()


def prune(newest_first: list, keep: int, problem, log=None) -> list:
    """Delete every state older than the keep-th complete one (problem(path) is None for a complete state).
    Nothing newer than it, and none of the `keep` newest complete states, is ever touched."""
    if keep <= 0:
        return []
    complete, deleted = 0, []
    for path in newest_first:
        if complete >= keep:
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(path)
            if log:
                log(f"deleted the older full state {path} (keep_full_states={keep})")
        elif problem(path) is None:
            complete += 1
    return deleted
