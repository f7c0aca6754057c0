"""The one exceptions module: every error hpc-sft raises on purpose, and the CLI exit code of each."""
from __future__ import annotations

from collections.abc import Mapping


def with_fix(problem: str, fix: str = "") -> str:
    """The one way a message states its fix: 'PROBLEM. Fix: FIX' (errors and warnings alike)."""
    return f"{problem}. Fix: {fix}" if fix else problem


class HpcSftError(Exception):
    """Base of every deliberate hpc-sft error: the problem and, when given, the fix (`fix=`)."""

    exit_code = 1

    def __init__(self, problem: str = "", fix: str = "") -> None:
        self.problem, self.fix = problem, fix
        super().__init__(with_fix(problem, fix))


class ConfigError(HpcSftError, ValueError):
    """A bad value: names the key, what is wrong, and the fix."""

    exit_code = 2

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        self.key = key
        super().__init__(f"{key}: {problem}" if key else problem, fix)
        self.problem = problem


class MissingPathError(HpcSftError, FileNotFoundError):
    """A local path named by the user does not exist."""

    exit_code = 3

    def __init__(self, key: str, path: str, fix: str = "") -> None:
        self.key, self.path = key, path
        super().__init__(f"{key}: {path!s} does not exist", fix or "check the path, or create it before submitting")


class TrainingError(HpcSftError, RuntimeError):
    """Training failed; the message names the log to read."""

    exit_code = 4


class SubmitError(HpcSftError, RuntimeError):
    """Slurm refused or could not be reached; nothing was queued."""

    exit_code = 5


def did_you_mean(word: str, choices) -> str:
    """' (did you mean X?)' for the closest valid choice, or ''."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key(key: str, valid, what: str = "key", hints=()) -> ConfigError:
    """The error for a key that is not in `valid`, listing the valid ones (`hints`: more did-you-mean words)."""
    valid = sorted(valid)
    return ConfigError(key, f"unknown {what}{did_you_mean(key, [*valid, *hints])}",
                       f"use one of: {', '.join(valid)}")


def table_of(where: str, value, keys, what: str, fix: str, expected: str = "a table/dict"):
    """`value` as a table (mapping) whose keys are all in `keys`; else the ConfigError naming `where` or
    `where.KEY` (an unknown key lists the valid ones). `what` names a key ("sweep key"), `fix` says how to write it."""
    if not isinstance(value, Mapping):
        raise ConfigError(where, f"must be {expected}, got {type(value).__name__}", fix)
    for key in value:
        if key not in keys:
            raise unknown_key(f"{where}.{key}", (f"{where}.{k}" for k in keys), what)
    return value


class Interrupted(TrainingError):
    """A local run stopped on a signal after saving a full state; rerunning the same call resumes it."""

    EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}

    def __init__(self, signal_name: str, message: str) -> None:
        self.signal_name = signal_name
        self.exit_code = self.EXIT_CODES.get(signal_name, 4)
        super().__init__(message)
