"""The guard clock: fixed, accelerated (the live drill) and wall; the sensors' intervals.

The instants are computed by hand: at 720 market seconds per wall second, 5 wall seconds are
one market hour. The wall clock is injected (``resources.guard_clock.wall_clock``), never
slept on.
"""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import resources.guard_clock as gc
from cvn_assets.guard.clock import AcceleratedClock, accelerated_clock, interval_seconds
from cvn_assets.settings import SettingsError, check_environment
from resources.guard_clock import GuardClock, guard_interval

ROOT = Path(__file__).resolve().parents[2]
START, ORIGIN, SPEED = "CVN_GUARD_CLOCK_START", "CVN_GUARD_CLOCK_ORIGIN", "CVN_GUARD_CLOCK_SPEED"
ORIGIN_AT = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture
def wall(monkeypatch):
    """Set the wall clock the resource reads: ``wall(datetime)``."""
    for name in (START, ORIGIN, SPEED, "CVN_GUARD_NOW"):
        monkeypatch.delenv(name, raising=False)

    def set_wall(when: datetime) -> None:
        monkeypatch.setattr(gc, "wall_clock", lambda: when)

    set_wall(ORIGIN_AT)
    return set_wall


def _accelerate(monkeypatch, start: str, origin: str, speed: str | None = None) -> None:
    monkeypatch.setenv(START, start)
    monkeypatch.setenv(ORIGIN, origin)
    if speed is not None:
        monkeypatch.setenv(SPEED, speed)


def test_accelerated_now_is_start_plus_elapsed_times_speed(monkeypatch, wall):
    _accelerate(monkeypatch, "2026-01-19T21:00:00Z", "2026-12-07T12:00:00Z", "720")
    clock = GuardClock()
    wall(_t("2026-12-07T12:00:00+00:00"))
    assert clock.now() == _t("2026-01-19T21:00:00+00:00")
    wall(_t("2026-12-07T12:00:05+00:00"))  # 5 s x 720 = 3600 s
    assert clock.now() == _t("2026-01-19T22:00:00+00:00")
    wall(_t("2026-12-07T12:00:12.500+00:00"))  # 12.5 s x 720 = 9000 s = 2 h 30 min
    assert clock.now() == _t("2026-01-19T23:30:00+00:00")
    wall(_t("2026-12-07T12:10:00+00:00"))  # 600 s x 720 = 120 h = 5 days
    assert clock.now() == _t("2026-01-24T21:00:00+00:00")


def test_speed_defaults_to_one_and_naive_or_offset_times_are_utc(monkeypatch, wall):
    # naive START = UTC; ORIGIN given at +02:00 is 10:00 UTC
    _accelerate(monkeypatch, "2026-01-01T00:00:00", "2026-12-07T12:00:00+02:00")
    wall(_t("2026-12-07T11:02:03+00:00"))  # 1 h 2 min 3 s after the origin
    assert GuardClock().now() == _t("2026-01-01T01:02:03+00:00")


def test_the_pure_clock_takes_the_wall_as_a_parameter():
    clock = accelerated_clock(
        {START: "2025-12-30T21:00:00Z", ORIGIN: "2026-12-07T12:00:00Z", SPEED: "1800"}
    )
    assert clock == AcceleratedClock(
        _t("2025-12-30T21:00:00+00:00"), _t("2026-12-07T12:00:00+00:00"), 1800.0
    )
    # 2 s x 1800 = 3600 s
    assert clock.at(_t("2026-12-07T12:00:02+00:00")) == _t("2025-12-30T22:00:00+00:00")
    assert accelerated_clock({}) is None
    assert accelerated_clock({START: " ", ORIGIN: "", SPEED: ""}) is None


def test_the_clock_never_runs_past_the_wall(monkeypatch, wall):
    # an hour behind the wall at 720x: 5 wall s later the market is at 12:00:00 (behind the
    # wall's 12:00:05); 6 wall s later at 11:00 + 4320 s = 12:12, past the wall's 12:00:06
    _accelerate(monkeypatch, "2026-12-07T11:00:00Z", "2026-12-07T12:00:00Z", "720")
    wall(_t("2026-12-07T12:00:05+00:00"))
    assert GuardClock().now() == _t("2026-12-07T12:00:00+00:00")
    wall(_t("2026-12-07T12:00:06+00:00"))
    with pytest.raises(ValueError, match=f"{START} .* {SPEED} 720 reached .* past the wall"):
        GuardClock().now()


def test_precedence_fixed_then_env_now_then_accelerated_then_wall(monkeypatch, wall):
    wall(ORIGIN_AT)
    assert GuardClock().now() == ORIGIN_AT  # nothing set: the wall
    _accelerate(monkeypatch, "2026-01-19T21:00:00Z", "2026-12-07T11:59:55Z", "720")
    assert GuardClock().now() == _t("2026-01-19T22:00:00+00:00")  # accelerated
    monkeypatch.setenv("CVN_GUARD_NOW", "2026-03-01T05:00:00Z")
    assert GuardClock().now() == _t("2026-03-01T05:00:00+00:00")  # env now wins
    fixed = GuardClock(fixed_now="2026-02-02T02:00:00")
    assert fixed.now() == _t("2026-02-02T02:00:00+00:00")  # the field wins


@pytest.mark.parametrize(
    "env, message",
    [
        ({SPEED: "fast"}, "CVN_GUARD_CLOCK_SPEED: 'fast' is not a number"),
        ({SPEED: "0"}, "CVN_GUARD_CLOCK_SPEED: '0' must be a finite number > 0"),
        ({SPEED: "-720"}, "CVN_GUARD_CLOCK_SPEED: '-720' must be a finite number > 0"),
        ({SPEED: "inf"}, "CVN_GUARD_CLOCK_SPEED: 'inf' must be a finite number > 0"),
        ({SPEED: "nan"}, "CVN_GUARD_CLOCK_SPEED: 'nan' must be a finite number > 0"),
        ({START: "yesterday"}, "CVN_GUARD_CLOCK_START: 'yesterday' is not an ISO time"),
        ({ORIGIN: "2026-13-01"}, "CVN_GUARD_CLOCK_ORIGIN: '2026-13-01' is not an ISO time"),
    ],
)
def test_bad_values_are_refused_naming_the_variable_and_the_value(env, message):
    good = {START: "2026-01-19T21:00:00Z", ORIGIN: "2026-12-07T12:00:00Z", SPEED: "720"}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        accelerated_clock({**good, **env})
    with pytest.raises(SettingsError, match=message.split(":")[0]):
        check_environment({**good, **env})


@pytest.mark.parametrize(
    "env, missing",
    [
        ({SPEED: "720"}, START),
        ({START: "2026-01-19T21:00:00Z", SPEED: "720"}, ORIGIN),
        ({ORIGIN: "2026-12-07T12:00:00Z"}, START),
    ],
)
def test_a_partial_setting_names_the_missing_variable(env, missing):
    with pytest.raises(ValueError, match=f"{missing} is required with"):
        accelerated_clock(env)


def test_a_bad_setting_fails_the_resource_at_use(monkeypatch, wall):
    monkeypatch.setenv(SPEED, "720")
    with pytest.raises(ValueError, match=f"{START} is required"):
        GuardClock().now()


@pytest.mark.parametrize(
    "seconds, speed, expected",
    [
        (300, 1.0, 300),
        (300, 2.0, 150),
        (60, 0.5, 120),  # a slower clock: a longer interval
        (3600, 720.0, 5),
        (300, 720.0, 1),  # 0.42 -> 0 -> at least 1
        (600, 720.0, 1),  # 0.83 -> 1
        (600, 60.0, 10),
        (90, 60.0, 2),  # 1.5 -> 2 (round half to even)
    ],
)
def test_interval_seconds(seconds, speed, expected):
    assert interval_seconds(seconds, speed) == expected


def test_interval_refuses_nonsense():
    with pytest.raises(ValueError, match="seconds must be an integer >= 1, got 0"):
        interval_seconds(0, 1.0)
    with pytest.raises(ValueError, match="speed must be a finite number > 0, got 0.0"):
        interval_seconds(60, 0.0)


def test_guard_interval_reads_the_environment(monkeypatch, wall):
    assert guard_interval(300) == 300
    _accelerate(monkeypatch, "2026-01-19T21:00:00Z", "2026-12-07T12:00:00Z", "60")
    assert guard_interval(300) == 5
    monkeypatch.setenv(SPEED, "-1")
    with pytest.raises(ValueError, match=SPEED):
        guard_interval(300)


def _sensor_intervals(env: dict[str, str]) -> dict[str, int]:
    """Each sensor's minimum interval as the code server would load the definitions."""
    code = (
        "import json; from cvn_assets.definitions import defs; print(json.dumps({s.name: "
        "s.minimum_interval_seconds for s in defs.get_repository_def().sensor_defs}))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CVN_GUARD_CLOCK")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_guard_sensors_tick_as_often_as_the_speed_asks():
    wall_intervals = {
        "expectancy_negative_focal": 300,
        "expectancy_negative_any": 300,
        "focal_training_crash": 60,
        "rollback_confirmation": 60,
        "alert_delivery": 60,
        "model_drift": 600,
        "guard_stale": 60,
        "live_candles": 30,
    }
    got = _sensor_intervals({})
    assert {k: got[k] for k in wall_intervals} == wall_intervals
    env = {START: "2026-01-19T21:00:00Z", ORIGIN: "2026-12-07T12:00:00Z", SPEED: "60"}
    got = _sensor_intervals(env)
    # 300 / 60 = 5, 60 / 60 = 1, 600 / 60 = 10, 30 / 60 = 0.5 -> at least 1
    assert {k: got[k] for k in wall_intervals} == {
        "expectancy_negative_focal": 5,
        "expectancy_negative_any": 5,
        "focal_training_crash": 1,
        "rollback_confirmation": 1,
        "alert_delivery": 1,
        "model_drift": 10,
        "guard_stale": 1,
        "live_candles": 1,
    }
    # every sensor on the guard clock is covered (a new one must use guard_interval too);
    # the automation sensor reacts to materializations, not to the clock
    assert set(got) - {"monitoring_follows_paper"} == set(wall_intervals)
