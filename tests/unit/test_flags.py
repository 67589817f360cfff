"""A flag's audit history as a step function (cvn_assets.guard.flags), checked against hand-written
histories: which decision hours are halted, written out by hand for each history."""

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest

from cvn_assets.guard.flags import DECISION_LAG, flag_history
from cvn_assets.guard.paper import replay
from tests.unit.test_paper import FEE, SL, TP, T, flat_candles, scripted, zero_features

SEED_AT = datetime(2026, 3, 1, tzinfo=UTC)  # the migration ran long after the replayed days
SEED = {"changed_at": SEED_AT, "old_value": None, "new_value": "false"}


def audit(*changes: tuple[str, str]) -> list[dict]:
    """The seed row, then (ISO time, new value) changes, each from the previous value."""
    rows, value = [SEED], "false"
    for when, new in changes:
        rows.append({"changed_at": pd.Timestamp(when), "old_value": value, "new_value": new})
        value = new
    return rows


def halted_hours(rows: list[dict], day: str) -> list[int]:
    hist = flag_history("trading_halted", rows, default="false")
    hours = pd.date_range(T(day), periods=24, freq="h")
    return [h.hour for h, v in zip(hours, hist.at_decisions(hours), strict=True) if v == "true"]


def test_no_change_and_only_the_seed_mean_never_halted() -> None:
    assert halted_hours([], "2024-01-01") == []
    assert halted_hours([SEED], "2024-01-01") == []  # the seed's own time does not count
    assert flag_history("f", [], default="focal").value_at(T("1990-01-01")) == "focal"


def test_halt_and_clear_inside_one_day() -> None:
    rows = audit(("2024-01-01 15:00+00:00", "true"), ("2024-01-01 20:30+00:00", "false"))
    # decisions at h + 1 h in [15:00, 20:30): h = 14 .. 19
    assert halted_hours(rows, "2024-01-01") == [14, 15, 16, 17, 18, 19]
    assert halted_hours(rows, "2024-01-02") == []


def test_halt_across_midnight_the_issue_example() -> None:
    rows = audit(("2024-01-01 15:00+00:00", "true"), ("2024-01-02 09:00+00:00", "false"))
    assert halted_hours(rows, "2024-01-01") == list(range(14, 24))
    # the 01:00, 05:00, 07:00 candles are halted; 08:00 is decided at 09:00, the clear
    assert halted_hours(rows, "2024-01-02") == list(range(0, 8))
    # run "before the clear" (audit without it) or "after" it: day 1 is the same
    assert halted_hours(rows[:2], "2024-01-01") == list(range(14, 24))


def test_halt_set_before_the_replay_start_holds_from_its_first_hour() -> None:
    rows = audit(("2023-12-30 10:00+00:00", "true"))
    assert halted_hours(rows, "2024-01-01") == list(range(24))
    assert halted_hours(rows, "2023-12-30") == list(range(9, 24))


def test_several_halt_clear_cycles() -> None:
    rows = audit(
        ("2024-01-01 02:00+00:00", "true"),
        ("2024-01-01 04:00+00:00", "false"),
        ("2024-01-01 10:15+00:00", "true"),
        ("2024-01-01 11:45+00:00", "false"),
        ("2024-01-01 22:00+00:00", "true"),
    )
    # [02:00, 04:00): h = 1, 2; [10:15, 11:45): decisions 11:00 -> h = 10; [22:00, ..): h >= 21
    assert halted_hours(rows, "2024-01-01") == [1, 2, 10, 21, 22, 23]
    assert halted_hours(rows, "2024-01-02") == list(range(24))


@pytest.mark.parametrize(
    ("halt", "clear", "expected"),
    [
        # a change at exactly a decision time applies to that decision
        ("2024-01-01 15:00:00+00:00", "2024-01-01 18:00:00+00:00", [14, 15, 16]),
        # one microsecond later: the 14:00 decision (15:00) is before the halt; the 17:00
        # decision (18:00) is before the clear
        ("2024-01-01 15:00:00.000001+00:00", "2024-01-01 18:00:00.000001+00:00", [15, 16, 17]),
        # one microsecond earlier: no difference from exactly on the hour
        ("2024-01-01 14:59:59.999999+00:00", "2024-01-01 17:59:59.999999+00:00", [14, 15, 16]),
    ],
)
def test_a_change_exactly_on_a_decision_time_uses_the_new_value(halt, clear, expected) -> None:
    assert halted_hours(audit((halt, "true"), (clear, "false")), "2024-01-01") == expected


def test_changes_at_other_offsets_are_the_same_instants() -> None:
    ist, pst = timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))
    rows = [
        SEED,
        {"changed_at": datetime(2024, 1, 1, 20, 30, tzinfo=ist), "old_value": "false",
         "new_value": "true"},  # 15:00 UTC
        {"changed_at": datetime(2024, 1, 1, 1, 0, tzinfo=pst), "old_value": "true",
         "new_value": "false"},  # 09:00 UTC on 2024-01-01
    ]  # fmt: skip
    with pytest.raises(ValueError, match="audit row 2 changed_at .* precedes"):
        flag_history("trading_halted", rows, default="false")
    rows[2]["changed_at"] = datetime(2024, 1, 2, 1, 0, tzinfo=pst)  # 09:00 UTC on 2024-01-02
    assert halted_hours(rows, "2024-01-02") == list(range(0, 8))


def test_same_instant_changes_the_last_one_wins_and_a_first_change_row_gives_the_past() -> None:
    rows = audit(("2024-01-01 12:00+00:00", "true"), ("2024-01-01 12:00+00:00", "false"))
    assert halted_hours(rows, "2024-01-01") == []
    # no seed row: the first row's old value held before it
    first = [{"changed_at": T("2024-01-01 06:00"), "old_value": "true", "new_value": "false"}]
    assert halted_hours(first, "2024-01-01") == [0, 1, 2, 3, 4]


def test_later_changes_never_change_an_earlier_day() -> None:
    base = audit(("2024-01-01 15:00+00:00", "true"), ("2024-01-02 09:00+00:00", "false"))
    later = audit(
        ("2024-01-01 15:00+00:00", "true"),
        ("2024-01-02 09:00+00:00", "false"),
        ("2024-01-03 10:00+00:00", "true"),
        ("2024-01-04 00:00+00:00", "false"),
    )
    for day in ("2024-01-01", "2024-01-02"):
        assert halted_hours(base, day) == halted_hours(later, day)


def test_bad_histories_are_refused_naming_the_row() -> None:
    with pytest.raises(ValueError, match=r"audit row 1 changed_at: naive time"):
        flag_history(
            "trading_halted",
            [SEED, {"changed_at": datetime(2024, 1, 1), "old_value": "false", "new_value": "true"}],
            default="false",
        )
    with pytest.raises(ValueError, match=r"audit row 0 lacks \['old_value'\]"):
        flag_history("f", [{"changed_at": SEED_AT, "new_value": "x"}], default="x")
    hist = flag_history("trading_halted", [SEED], default="false")
    with pytest.raises(ValueError, match="naive"):
        hist.at_decision(pd.Timestamp("2024-01-01 10:00"))


def test_decision_lag_is_the_candle_length() -> None:
    assert DECISION_LAG == pd.Timedelta(hours=1)


def test_replay_under_the_issue_history_by_hand() -> None:
    """Halt 2024-01-01 15:00, clear 2024-01-02 09:00; flat candles (no barrier is touched,
    so a trade not halted times out after 4 candles). BUY signals at 13:00 (enters: decided
    at 14:00), 14:00 and 20:00 (halted), 01:00, 05:00, 07:00 on day 2 (halted), 08:00 on day
    2 (decided at 09:00: the clear applies; enters)."""
    rows = audit(("2024-01-01 15:00+00:00", "true"), ("2024-01-02 09:00+00:00", "false"))
    hist = flag_history("trading_halted", rows, default="false")
    c = flat_candles(n_days=3)
    buys = ["2024-01-01 13:00", "2024-01-01 14:00", "2024-01-01 20:00", "2024-01-02 01:00",
            "2024-01-02 05:00", "2024-01-02 07:00", "2024-01-02 08:00"]  # fmt: skip
    model, _ = scripted(buys)
    r = replay(
        c, zero_features(c), "2024-01-01", "2024-01-02", model, crypto="BTCUSDC",
        take_profit=TP, stop_loss=SL, horizon=4, fee_per_side=FEE, halted=hist.is_value("true"),
    )  # fmt: skip
    tr = r.trades
    # the 13:00 long is open when the halt starts: closed at the open of 15:00, the first
    # candle after the first halted decision (14:00's, taken at 15:00)
    assert tr["entry_time"].tolist() == [T("2024-01-01 13:00"), T("2024-01-02 08:00")]
    assert tr["exit_time"].tolist() == [T("2024-01-01 15:00"), T("2024-01-02 12:00")]
    assert tr["barrier"].tolist() == ["halt", "time"]
    decided = r.predictions.set_index("hour")["decision"]
    assert all(decided[T(h)] == "BUY" for h in buys)  # the signals are still logged
