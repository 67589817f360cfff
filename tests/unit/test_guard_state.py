"""The pure rows of ``guard_state`` (:mod:`cvn_assets.guard.state`): hours behind by hand,
none / unknown cells, Markdown cells that cannot break the table."""

from datetime import UTC, datetime

import pandas as pd
import pytest

from cvn_assets.guard.state import (
    crypto_row,
    flag_markdown,
    flag_state,
    hours_behind,
    plot_entries,
    state_markdown,
    unknown_flag,
)


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.mark.parametrize(
    ("last", "now", "behind"),
    [
        ("2025-03-11 02:00", "2025-03-11 03:30", 0),  # 02:00 closed at 03:00: journaled
        ("2025-03-11 02:00", "2025-03-11 03:00", 0),  # closed exactly now
        ("2025-03-11 02:00", "2025-03-11 02:59:59", -1),  # not closed yet: journal ahead
        ("2025-03-10 23:00", "2025-03-11 03:30", 3),  # 00, 01, 02 closed, not journaled
        ("2025-03-10 20:00", "2025-03-11 03:30", 6),
    ],
)
def test_hours_behind_counts_closed_candles_after_the_last_journaled(last, now, behind):
    assert hours_behind(_ts(last), _ts(now)) == behind


def test_hours_behind_any_offset_none_and_naive():
    east = pd.Timestamp("2025-03-11 05:30", tz="Etc/GMT-2")  # = 03:30 UTC
    assert hours_behind(_ts("2025-03-10 23:00"), east) == 3
    assert hours_behind(None, _ts("2025-03-11 03:30")) is None
    with pytest.raises(ValueError, match="last_hour.*naive"):
        hours_behind(pd.Timestamp("2025-03-10 23:00"), _ts("2025-03-11 03:30"))


def _row(crypto, **kw):
    base = dict(
        champion=None,
        champion_assigned=None,
        candidate=None,
        candidate_assigned=None,
        last_hour=None,
        now=datetime(2025, 3, 11, 3, 30, tzinfo=UTC),
    )
    return crypto_row(crypto, **{**base, **kw})


def _cells(md: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in md.splitlines()[2:]]


def test_none_unknown_and_a_pipe_in_a_cell():
    champ = {"id": 7, "variant": "focal_g2_a025", "loss_function": "focal"}
    assigned = {"valid_from": _ts("2025-03-01 12:00:30"), "actor": "a|b", "reason": "r"}
    rows = [
        _row("BTCUSDC", champion=champ, champion_assigned=assigned, last_hour=_ts("2025-03-11")),
        _row("ETHUSDC"),
        _row("SOLUSDC", registry_error="down", journal_error="down"),
    ]
    md = state_markdown(rows)
    assert len(md.splitlines()) == 5 and "a\\|b" in md
    btc, eth, sol = _cells(md)
    assert btc[1:5] == ["v7", "focal_g2_a025", "focal", "2025-03-01 12:00:30 UTC"]
    assert btc[7:] == ["2025-03-11 00:00 UTC", "2"]
    assert eth[1:] == ["none"] * 8
    assert sol[1:] == ["unknown"] * 8
    flags = {
        "L": flag_state("L", ("focal", 3), [{"changed_at": _ts("2025-03-01"), "actor": "x",
                                             "reason": "y", "incident_id": None}]),
        "H": unknown_flag("H", "OperationalError: refused"),
    }  # fmt: skip
    flat = plot_entries(flags, rows, loss_flag="L", halt_flag="H", focal="focal")
    assert (flat["loss_function"], flat["loss_function_version"]) == ("focal", 3)
    assert (flat["trading_halted"], flat["trading_halted_version"]) == ("unknown", None)
    assert flat["flags_error"] == "OperationalError: refused"
    assert (flat["champions"], flat["focal_champions"], flat["hours_behind_max"]) == (1, 1, 2)
    assert flat["hours_behind_SOLUSDC"] is None and flat["champion_version_BTCUSDC"] == 7
    lines = _cells(flag_markdown(list(flags.values())))
    assert lines[0] == ["L", "focal", "3", "2025-03-01 00:00 UTC", "x", "y"]
    assert lines[1] == ["H", "unknown", "none", "unknown", "unknown",
                        "unknown: OperationalError: refused"]  # fmt: skip
    assert flag_state("L", None, [])["value"] == "none"
    empty = plot_entries(flags, [], loss_flag="L", halt_flag="H", focal="focal")
    assert empty["hours_behind_max"] is None and empty["champions"] == 0
