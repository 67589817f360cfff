"""``CVN_SYNTHETIC_MARKET``: the generator settings a JSON object sets, each checked."""

import pytest

from cvn_assets.market.market_env import GENERATOR_DEFAULTS, parse_synthetic_market
from cvn_assets.settings import SettingsError, check_environment


def test_only_the_keys_given_are_returned_with_their_types():
    assert parse_synthetic_market(None) == {}
    assert parse_synthetic_market("  ") == {}
    got = parse_synthetic_market(
        '{"edge": 4, "crash_hours": 240, "crash_at": "2026-01-21", "scenario_symbols": '
        '["BTCUSDC"], "vol_shift_at": null}'
    )
    assert got == {
        "edge": 4.0,
        "crash_hours": 240,
        "crash_at": "2026-01-21",
        "scenario_symbols": ["BTCUSDC"],
        "vol_shift_at": None,
    }
    assert isinstance(got["edge"], float) and isinstance(got["crash_hours"], int)
    got["scenario_symbols"].append("X")  # the caller's copy: the cache is untouched
    assert parse_synthetic_market(
        '{"edge": 4, "crash_hours": 240, "crash_at": "2026-01-21", "scenario_symbols": '
        '["BTCUSDC"], "vol_shift_at": null}'
    )["scenario_symbols"] == ["BTCUSDC"]


@pytest.mark.parametrize(
    ("raw", "msg"),
    [
        ('{"crash": "2026-01-21"}', "unknown key 'crash' (value \"2026-01-21\")"),
        ('{"seed": -1}', "seed=-1 must be >= 0"),
        ('{"seed": 1.5}', "seed=1.5 is not an integer"),
        ('{"hours": true}', "hours=true is not an integer"),
        ('{"crash_hours": 0}', "crash_hours=0 must be >= 1"),
        ('{"crash_pct": 1.0}', "crash_pct=1.0 must be in (0, 1)"),
        ('{"vol_multiplier": 0}', "vol_multiplier=0 must be > 0"),
        ('{"edge": "4"}', 'edge="4" is not a number'),
        ('{"edge": null}', "edge=null is not a number"),
        ('{"start": 2023}', "start=2023 is not an ISO time string"),
        ('{"crash_at": "the 21st"}', 'crash_at="the 21st" is not an ISO time'),
        ('{"scenario_symbols": "BTCUSDC"}', 'scenario_symbols="BTCUSDC" is not a list'),
        ('{"edge_multiplier": 1e999}', "edge_multiplier=Infinity is not finite"),
    ],
)
def test_a_bad_key_or_value_is_named(raw, msg):
    with pytest.raises(ValueError) as err:
        parse_synthetic_market(raw)
    assert str(err.value).startswith("CVN_SYNTHETIC_MARKET: ")
    assert msg in str(err.value)
    with pytest.raises(SettingsError, match="CVN_SYNTHETIC_MARKET"):
        check_environment({"CVN_SYNTHETIC_MARKET": raw})


def test_the_defaults_are_the_embedded_market():
    from cvn_assets.market.synthetic_market import Scenario

    assert GENERATOR_DEFAULTS["seed"] == 7 and GENERATOR_DEFAULTS["hours"] == 21900
    assert (GENERATOR_DEFAULTS["start"], GENERATOR_DEFAULTS["edge"]) == ("2023-07-01", 0.5)
    # the scenario defaults are Scenario's own
    s = Scenario()
    for key in ("crash_pct", "crash_hours", "vol_multiplier", "edge_multiplier"):
        assert GENERATOR_DEFAULTS[key] == getattr(s, key), key
