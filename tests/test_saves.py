"""The full-state policy, pure: retention never deletes the newest complete states or anything newer; the
periodic clock is due only after its interval; sft()'s options reach the workers' environment."""
from __future__ import annotations

from hpc_sft._worker.hpc_sft_shim import saves


def states(tmp_path, names):
    paths = []
    for name in names:
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name)
    return paths


def test_keep_one_deletes_everything_older_than_the_newest_complete_state(tmp_path):
    newest_first = states(tmp_path, ["e4", "e3", "e2", "e1"])
    torn = {"e4"}  # being written (or torn): never counts, never deleted while it is the newest
    deleted = saves.prune(newest_first, 1, lambda p: "torn" if p.name in torn else None)
    assert [p.name for p in deleted] == ["e2", "e1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e3", "e4"]


def test_keep_two_counts_complete_states_only_and_zero_keeps_all(tmp_path):
    newest_first = states(tmp_path, ["e5", "e4", "e3", "e2", "e1"])
    problem = {"e4": "torn"}.get
    assert saves.prune(newest_first, 0, lambda p: problem(p.name)) == []
    said = []
    deleted = saves.prune(newest_first, 2, lambda p: problem(p.name), said.append)
    assert [p.name for p in deleted] == ["e2", "e1"]  # e5 and e3 are the two kept; torn e4 lies between
    assert said and "keep_full_states=2" in said[0]


def test_no_complete_state_means_nothing_is_deleted(tmp_path):
    newest_first = states(tmp_path, ["e2", "e1"])
    assert saves.prune(newest_first, 1, lambda p: "torn") == []
    assert len(list(tmp_path.iterdir())) == 2


def test_the_clock_is_due_after_its_interval_and_a_save_resets_it(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(saves.time, "monotonic", lambda: now[0])
    clock = saves.Clock(60)
    now[0] += 59.9
    assert not clock.due()
    now[0] += 0.2
    assert clock.due()
    clock.saved()
    assert not clock.due()
    now[0] += 1e6
    assert not saves.Clock(0).due()  # 0: periodic saves off


def test_the_options_travel_to_the_workers_in_seconds():
    assert saves.env_for(1.5, 2) == {saves.EVERY_ENV: "90.0", saves.KEEP_ENV: "2"}
    assert saves.env_for(None, None) == {saves.EVERY_ENV: "0.0", saves.KEEP_ENV: "0"}
