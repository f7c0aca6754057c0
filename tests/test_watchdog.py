"""The hang watchdog's decision, pure: a healthy run whose steps or saves are slow never fires; a stall does."""
import pytest

from hpc_sft.executors.slurm.watchdog import Timing, describe_hang, limit_for, stalled


def beat(rank, phase, t, step=10, **extra):
    return {"rank": rank, "phase": phase, "time": t, "step": step, "pid": 100 + rank, "host": "n1", **extra}


def test_no_beats_at_all_fires_only_after_the_start_up_allowance():
    timing = Timing()
    assert stalled({}, 2, started=0, now=70, timeout_s=20, timing=timing) is None  # 4 x 20 s to start
    stall = stalled({}, 2, started=0, now=81, timeout_s=20, timing=timing)
    assert stall.phase == "startup" and stall.limit_s == 80


def test_a_rank_that_never_beat_keeps_the_run_in_start_up():
    beats = {0: beat(0, "step", 75)}
    assert stalled(beats, 2, started=0, now=79, timeout_s=20, timing=Timing()) is None
    assert stalled(beats, 2, started=0, now=81, timeout_s=20, timing=Timing()).phase == "startup"


def test_a_stall_in_training_fires_after_the_timeout():
    beats = {0: beat(0, "step", 100, step_s=0.2), 1: beat(1, "step", 100, step_s=0.2)}
    timing = Timing()
    timing.learn(beats)
    assert stalled(beats, 2, started=0, now=119, timeout_s=20, timing=timing) is None
    stall = stalled(beats, 2, started=0, now=121, timeout_s=20, timing=timing)
    assert stall.phase == "step" and round(stall.quiet_s) == 21 and "rank 1: step step 10" in stall.describe()


def test_slow_steps_raise_the_limit():
    beats = {0: beat(0, "step", 100, step_s=9.0)}  # a healthy run whose steps take 9 s
    timing = Timing()
    timing.learn(beats)
    assert limit_for("step", 5, timing) == 90
    assert stalled(beats, 1, started=0, now=189, timeout_s=5, timing=timing) is None


@pytest.mark.parametrize("longest_save,limit", [(None, 20), (12.0, 36), (1.0, 5)])
def test_saves_get_more_time_first_unmeasured_then_three_times_the_longest(longest_save, limit):
    timing = Timing(longest_save=longest_save)
    assert limit_for("saving", 5, timing) == limit


def test_ranks_waiting_for_a_saver_are_judged_by_the_save_allowance():
    beats = {0: beat(0, "saving", 100), 1: beat(1, "step", 90)}  # rank 1 waits in the save's barrier
    assert stalled(beats, 2, started=0, now=105, timeout_s=5, timing=Timing()) is None  # 20 s for a first save
    assert stalled(beats, 2, started=0, now=111, timeout_s=5, timing=Timing()).phase == "saving"


def test_the_longest_save_is_learned_from_the_beats():
    timing = Timing()
    timing.learn({0: beat(0, "saved", 1, save_s=7.5), 1: beat(1, "step", 1, step_s=0.3)})
    timing.learn({0: beat(0, "saved", 2, save_s=3.0)})
    assert (timing.longest_save, timing.longest_step) == (7.5, 0.3)


def test_the_stop_reason_names_the_first_node_that_noticed_whichever_it_was():
    late = {"node_rank": 0, "host": "node1", "phase": "step", "quiet_s": 17, "time": 105.0, "suspects": []}
    early = {"node_rank": 1, "host": "node2", "phase": "step", "quiet_s": 16, "time": 104.0,
             "suspects": [{"rank": 1, "pid": 7, "why": "is stopped (state T)"}]}
    expected = "hang: no progress for 16s in phase step (found by node 1 (node2))"
    assert describe_hang([late, early]) == describe_hang([early, late]) == expected
    assert describe_hang([]) is None


def test_the_data_watchdog_fires_only_on_a_whole_timeout_without_cpu():
    from hpc_sft.executors.slurm.datawatch import quiet

    working = [(t, 0.9 * t) for t in range(0, 40, 2)]  # tokenizing: ~1 CPU second per second
    assert quiet(working, 20) is None
    stuck = working + [(40 + t, working[-1][1] + 0.01 * t) for t in range(2, 24, 2)]  # then nearly nothing
    assert quiet(stuck[:-3], 20) is None  # quiet for less than a whole timeout yet
    assert quiet(stuck, 20) is not None and quiet(stuck, 20) < 1.0
    assert quiet([(0, 0.0), (5, 0.0)], 20) is None  # too early to tell


def test_a_peer_nodes_hang_record_of_this_attempt_is_seen_and_its_own_is_not(tmp_path):
    import json

    from hpc_sft.executors.slurm.watchdog import Watchdog
    from hpc_sft.rundir.layout import hang_record_file

    dog = Watchdog(tmp_path / "beats", tmp_path, "7.0", 2, 0, 15)
    (tmp_path / hang_record_file("7.0", 0)).write_text(json.dumps({"node_rank": 0}))
    (tmp_path / hang_record_file("6.0", 1)).write_text(json.dumps({"node_rank": 1}))  # an earlier attempt
    assert dog._peer_record() is None
    (tmp_path / hang_record_file("7.0", 1)).write_text(json.dumps({"node_rank": 1, "host": "node2"}))
    assert dog._peer_record() == {"node_rank": 1, "host": "node2"}
