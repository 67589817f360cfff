"""The live drill's parts that need no daemon: arguments, its dagster.yaml, the daemon's
environment, the process-tree walk that stops what it started."""

import os
import signal
import subprocess
import time
from datetime import UTC, datetime

import pandas as pd
import pytest


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lead-hours", "0"], "--lead-hours 0: must be >= 1"),
        (["--hour-seconds", "0.1"], "--hour-seconds 0.1: must be in [0.5, 3600]"),
        (["--calm-hours", "0"], "--calm-hours 0: must be >= 1"),
        (["--deadline", "-5"], "--deadline -5.0: must be > 0"),
        (["--max-runs", "0"], "--max-runs 0: must be >= 1"),
        (["--turn-hours", "-1"], "--turn-hours -1: must be >= 0"),
    ],
)
def test_bad_arguments_exit_2_before_any_work(tmp_path, capsys, argv, message):
    from cvn_assets.live_drill import main

    home = tmp_path / "home"
    assert main(["--scenario", "calm", "--home", str(home), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not home.exists()  # nothing made, nothing wiped


def test_an_unknown_scenario_is_refused_by_argparse(capsys):
    from cvn_assets.live_drill import main

    with pytest.raises(SystemExit) as err:
        main(["--scenario", "storm"])
    assert err.value.code == 2
    assert "invalid choice: 'storm'" in capsys.readouterr().err


def test_the_instance_yaml_queues_at_most_max_runs_and_threads_the_sensors(tmp_path):
    from dagster import DagsterInstance
    from dagster._core.run_coordinator import QueuedRunCoordinator

    from cvn_assets.live_drill import instance_yaml
    from resources.instance_storage import CachedEngineSqliteEventLogStorage

    (tmp_path / "dagster.yaml").write_text(instance_yaml(tmp_path, 2))
    with DagsterInstance.from_config(str(tmp_path)) as instance:  # Dagster validates it
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        queue = coordinator.get_run_queue_config()
        assert queue.max_concurrent_runs == 2
        assert coordinator.dequeue_interval_seconds == 1
        assert isinstance(instance.event_log_storage, CachedEngineSqliteEventLogStorage)
        assert instance.get_settings("sensors") == {"use_threads": True, "num_workers": 4}


def test_the_daemon_environment_carries_the_market_and_the_clock():
    from cvn_assets.guard.clock import accelerated_clock
    from cvn_assets.live_drill import daemon_env

    base = {"CVN_GUARD_NOW": "2026-01-01T00:00:00Z", "PATH": "/bin", "PYTHONPATH": "/x"}
    start = pd.Timestamp("2025-12-30T18:00:00Z")
    before = datetime.now(UTC)
    env = daemon_env(base, {"edge": 4.0}, start, 720.0)
    after = datetime.now(UTC)
    assert "CVN_GUARD_NOW" not in env  # it would freeze the clock
    assert env["CVN_SYNTHETIC_MARKET"] == '{"edge": 4.0}'
    assert env["PYTHONPATH"].endswith(os.pathsep + "/x")
    clock = accelerated_clock(env)
    assert clock.start == start.to_pydatetime() and clock.speed == 720.0
    assert before <= clock.origin <= after
    assert base["CVN_GUARD_NOW"]  # the caller's mapping is untouched


def test_descendants_finds_the_whole_tree_and_only_it(tmp_path):
    from cvn_assets.live_drill import descendants

    marker = tmp_path / "pids"
    # a shell whose child shell starts a sleep: three levels
    script = f"sh -c 'sleep 60 & echo $! >> {marker}; wait' & echo $! >> {marker}; wait"
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while (not marker.exists() or len(marker.read_text().split()) < 2) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        inner_shell, sleeper = (int(p) for p in marker.read_text().split())
        found = descendants(proc.pid)
        assert {inner_shell, sleeper} <= found
        assert proc.pid not in found and os.getpid() not in found
        assert descendants(sleeper) == set()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_the_plan_places_the_clock_before_the_turn():
    from cvn_assets.live_drill import Plan, _parse_args

    plan = Plan.of(_parse_args(["--scenario", "crash"]))
    # the default window ends 2025-12-29T12:00: the first day is 12-30; the turn 20 days
    # later (make drill's day 20), the clock 3 h before it
    assert plan.first_day == pd.Timestamp("2025-12-30", tz="UTC")
    assert plan.turn == pd.Timestamp("2026-01-19", tz="UTC")
    assert plan.clock_start == pd.Timestamp("2026-01-18T21:00", tz="UTC")
    assert plan.speed == 720.0 and plan.deadline_s == 480.0
    assert plan.market_cfg["edge_shift_at"] == "2026-01-19T00:00:00+00:00"
    assert plan.market_cfg["crash_at"] == "2026-01-21T00:00:00+00:00"
    calm = Plan.of(_parse_args(["--scenario", "calm", "--hour-seconds", "2", "--turn-hours", "24"]))
    assert calm.speed == 1800.0 and calm.deadline_s == 48 * 2 + 120
    assert calm.clock_start == pd.Timestamp("2025-12-30T21:00", tz="UTC")
    assert calm.calm_end == pd.Timestamp("2026-01-01T21:00", tz="UTC")
    assert calm.market_cfg == {"edge": 4.0}


@pytest.mark.parametrize(
    "run_key, at",
    [
        ("rollback:auto:2026-01-20T22", "2026-01-20T22:00:00+00:00"),
        (
            "escalation:INC-20260120T1500-rollback-ETHUSDC:2026-01-20T2245",
            "2026-01-20T22:45:00+00:00",
        ),
        ("alert_delivery", None),
    ],
)
def test_the_market_time_of_a_run_key(run_key, at):
    from dagster import DagsterRun

    from cvn_assets.live_watch import _key_time

    run = DagsterRun(job_name="rollback_job", tags={"dagster/run_key": run_key})
    assert _key_time(run) == at


def test_a_process_is_named_by_its_pid_and_start_time():
    from cvn_assets.live_drill import _alive, _start_time

    proc = subprocess.Popen(["sleep", "30"])
    try:
        started = _start_time(proc.pid)
        assert started is not None and _alive(proc.pid, started)
        assert not _alive(proc.pid, started + 1)  # the same PID, another process: not it
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert _start_time(proc.pid) is None and not _alive(proc.pid, started)
