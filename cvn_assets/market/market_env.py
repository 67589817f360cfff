"""``CVN_SYNTHETIC_MARKET``: the synthetic market's generator settings from the environment.

Runs launched by the daemon (the live drill's ``dagster dev``) get no drill run config, so a
scenario (``edge``, ``edge_shift_at``, ``crash_at`` ...) reaches every run of the code
location through this variable: a JSON object of :data:`GENERATOR_DEFAULTS`' keys, used by
:class:`resources.market_data.MarketDataResource` for each field its run config leaves unset
(a field set in run config wins; a key absent here takes its default). Pure: no Dagster.
"""

import json
import math
from functools import lru_cache
from typing import Any

import pandas as pd

from cvn_assets.market.synthetic_market import (
    DEFAULT_EDGE,
    DEFAULT_HOURS,
    DEFAULT_SEED,
    DEFAULT_START,
)

__all__ = ["GENERATOR_DEFAULTS", "SYNTHETIC_MARKET_ENV", "parse_synthetic_market"]

SYNTHETIC_MARKET_ENV = "CVN_SYNTHETIC_MARKET"

#: the generator's settings and their defaults (the embedded default market)
GENERATOR_DEFAULTS: dict[str, Any] = {
    "seed": DEFAULT_SEED,
    "start": DEFAULT_START,
    "hours": DEFAULT_HOURS,
    "edge": DEFAULT_EDGE,
    "crash_at": None,
    "crash_pct": 0.25,
    "crash_hours": 24,
    "vol_shift_at": None,
    "vol_multiplier": 2.0,
    "edge_shift_at": None,
    "edge_multiplier": 0.0,
    "scenario_symbols": None,
}
_TIMES = ("start", "crash_at", "vol_shift_at", "edge_shift_at")
_INTS = {"seed": 0, "hours": 1, "crash_hours": 1}  # key -> minimum
_NUMBERS = ("edge", "crash_pct", "vol_multiplier", "edge_multiplier")


def _bad(key: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{SYNTHETIC_MARKET_ENV}: {key}={json.dumps(value)} {why}")


def _check(key: str, value: Any) -> Any:
    """``value`` of ``key`` checked (ints stay ints, numbers become floats, symbols a list)."""
    if value is None and GENERATOR_DEFAULTS[key] is None:
        return None
    if key in _TIMES:
        if not isinstance(value, str):
            raise _bad(key, value, "is not an ISO time string")
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError):
            ts = pd.NaT
        if ts is pd.NaT:
            raise _bad(key, value, "is not an ISO time")
        return value
    if key in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(key, value, "is not an integer")
        if value < _INTS[key]:
            raise _bad(key, value, f"must be >= {_INTS[key]}")
        return value
    if key in _NUMBERS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(key, value, "is not a number")
        if not math.isfinite(value):
            raise _bad(key, value, "is not finite")
        if key == "crash_pct" and not 0 < value < 1:
            raise _bad(key, value, "must be in (0, 1)")
        if key == "vol_multiplier" and value <= 0:
            raise _bad(key, value, "must be > 0")
        return float(value)
    # scenario_symbols
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise _bad(key, value, "is not a list of symbols")
    return list(value)


@lru_cache(maxsize=8)
def _parsed(raw: str) -> tuple[tuple[str, Any], ...]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{SYNTHETIC_MARKET_ENV}: not valid JSON ({exc.msg}): {raw!r}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{SYNTHETIC_MARKET_ENV}: expected a JSON object, got {raw!r}")
    unknown = sorted(set(obj) - set(GENERATOR_DEFAULTS))
    if unknown:
        raise ValueError(
            f"{SYNTHETIC_MARKET_ENV}: unknown key {unknown[0]!r} (value "
            f"{json.dumps(obj[unknown[0]])}); known: {', '.join(GENERATOR_DEFAULTS)}"
        )
    return tuple((k, _check(k, v)) for k, v in obj.items())


def parse_synthetic_market(raw: str | None) -> dict[str, Any]:
    """The generator settings ``raw`` (the variable's text) sets: only its keys, checked.
    Unset or blank: ``{}``. ValueError naming the variable, the key and the value for an
    unknown key, a wrong type or a value out of range (times must parse, ``seed >= 0``,
    ``hours`` and ``crash_hours >= 1``, ``crash_pct`` in (0, 1), ``vol_multiplier > 0``,
    numbers finite)."""
    if raw is None or not raw.strip():
        return {}
    return {k: (list(v) if isinstance(v, list) else v) for k, v in _parsed(raw)}
