"""Definition-time settings: what must be known before Dagster loads the asset graph.

Partitions (the crypto universe, the fold count) and the asset factory (one model asset per
variant of the ablation matrix) are fixed when ``Definitions`` is built, so they come from
environment variables, validated here with errors that name the variable and the value.
Everything else that varies per run (label strategy, embargo, fees, XGBoost parameters) is
run config on the ``SweepSettings`` resource.

This module imports no Dagster.
"""

import datetime
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cvn_assets.ablation.variants import DEFAULT_VARIANTS, Variant, build_variant_matrix
from cvn_assets.guard.clock import accelerated_clock
from cvn_assets.market.market_env import SYNTHETIC_MARKET_ENV, parse_synthetic_market

DEFAULT_UNIVERSE: tuple[str, ...] = ("BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC")
DEFAULT_N_FOLDS = 5
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")


class SettingsError(ValueError):
    """A definition-time setting (environment variable) is invalid."""


@dataclass(frozen=True)
class ProjectSettings:
    universe: tuple[str, ...]
    n_folds: int
    variants: tuple[Variant, ...]

    @property
    def fold_keys(self) -> tuple[str, ...]:
        return tuple(f"f{i}" for i in range(self.n_folds))

    def identity(self) -> dict[str, Any]:
        """The definition-time part of a sweep's identity (JSON-able)."""
        return {
            "universe": list(self.universe),
            "n_folds": self.n_folds,
            "variants": [
                {
                    "name": v.name,
                    "loss_function": v.loss_function,
                    "gamma": v.gamma,
                    "alpha": v.alpha,
                }
                for v in self.variants
            ],
        }


def parse_universe(raw: str | None) -> tuple[str, ...]:
    if raw is None or not raw.strip():
        return DEFAULT_UNIVERSE
    symbols = tuple(s.strip().upper() for s in raw.split(",") if s.strip())
    for s in symbols:
        if not _SYMBOL_RE.match(s):
            raise SettingsError(
                f"CVN_UNIVERSE: symbol {s!r} is not an exchange symbol like BTCUSDC"
            )
    if len(set(symbols)) != len(symbols):
        raise SettingsError(f"CVN_UNIVERSE: duplicate symbols in {raw!r}")
    if len(symbols) < 2:
        raise SettingsError(f"CVN_UNIVERSE: need at least 2 symbols for paired tests, got {raw!r}")
    return symbols


def parse_n_folds(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return DEFAULT_N_FOLDS
    try:
        n = int(raw)
    except ValueError:
        raise SettingsError(f"CVN_N_FOLDS: {raw!r} is not an integer") from None
    if not 3 <= n <= 20:
        raise SettingsError(f"CVN_N_FOLDS: {n} is outside [3, 20]")
    return n


def _json_env(name: str, raw: str, expected: type) -> Any:
    """Parse environment variable ``name`` as JSON of type ``expected``, naming it on error."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name}: not valid JSON ({exc.msg}): {raw!r}") from None
    if not isinstance(value, expected):
        raise SettingsError(f"{name}: expected a JSON {expected.__name__}, got {raw!r}")
    return value


def parse_symbol_map(raw: str | None) -> dict[str, str]:
    """``CVN_SYMBOL_MAP``: universe symbol -> file symbol, e.g. ``{"BTCUSDC": "BTCUSDT"}``."""
    if raw is None or not raw.strip():
        return {}
    return {str(k): str(v) for k, v in _json_env("CVN_SYMBOL_MAP", raw, dict).items()}


def parse_variants(raw: str | None) -> tuple[Variant, ...]:
    if raw is None or not raw.strip():
        return DEFAULT_VARIANTS
    specs = _json_env("CVN_VARIANTS", raw, list)
    try:
        return build_variant_matrix(specs)
    except ValueError as exc:
        raise SettingsError(f"CVN_VARIANTS: {exc}") from None


MARKET_SOURCES: tuple[str, ...] = ("synthetic", "csv")

#: every environment variable of the project; any other ``CVN_*`` name is a typo
KNOWN_ENV: tuple[str, ...] = (
    "CVN_UNIVERSE",
    "CVN_N_FOLDS",
    "CVN_VARIANTS",
    "CVN_MARKET_SOURCE",
    "CVN_CSV_DIR",
    "CVN_SYMBOL_MAP",
    "CVN_DATABASE_URL",
    "CVN_STORE_DIR",
    "CVN_PAPER_START",  # first day of the paper-trading partitions
    "CVN_PAPER_CSV_DIR",  # candles after the sweep's files, for paper trading on real data
    # in_process (default) | celery: definition-time (cvn_assets.execution.executors)
    "CVN_EXECUTOR",
    "CVN_CELERY_BROKER",  # celery: the broker URL (redis://host:port/0)
    "CVN_CELERY_BACKEND",  # celery: the result backend URL
    "CVN_SHARED_DATA",  # tests and benchmarks: where the real candles are
    "CVN_TEST_PG_URL",  # tests: a PostgreSQL server
    "CVN_TEST_CELL_GATE",  # tests: hold cells at a gate (cvn_assets.assets.cells)
    "CVN_ALERTS_PATH",  # the alert sink's JSONL file (absolute)
    "CVN_SLACK_WEBHOOK_URL",  # the alert sink's Slack incoming webhook (a secret)
    "CVN_GUARD_NOW",  # tests: a fixed guard clock for a code location (resources.guard_clock)
    # the accelerated guard clock of the live drill (cvn_assets.guard.clock)
    "CVN_GUARD_CLOCK_START",
    "CVN_GUARD_CLOCK_ORIGIN",
    "CVN_GUARD_CLOCK_SPEED",
    "CVN_SYNTHETIC_MARKET",  # the synthetic market's generator settings (JSON; market_env)
)


def check_environment(env: Mapping[str, str]) -> None:
    """Validate the run-environment variables the resources read at use, so a typo fails when
    the definitions load, in one line naming the variable and the value.

    No ``CVN_*`` name outside :data:`KNOWN_ENV` (a misspelled name would otherwise be
    silently ignored); ``CVN_MARKET_SOURCE`` (synthetic | csv), ``CVN_CSV_DIR`` (an existing
    folder; required for csv), ``CVN_SYMBOL_MAP`` (a JSON object), ``CVN_DATABASE_URL`` (a
    SQLAlchemy URL with a scheme), ``CVN_STORE_DIR`` (not an existing file),
    ``CVN_ALERTS_PATH`` (absolute, not a directory), ``CVN_SLACK_WEBHOOK_URL`` (http(s); the
    message never shows it), ``CVN_GUARD_CLOCK_*`` (the accelerated guard clock) and
    ``CVN_SYNTHETIC_MARKET`` (the generator's settings). Raises :class:`SettingsError`.
    """
    import difflib

    for name in sorted(k for k in env if k.startswith("CVN_") and k not in KNOWN_ENV):
        close = difflib.get_close_matches(name, KNOWN_ENV, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(KNOWN_ENV)}"
        raise SettingsError(
            f"{name}: not a cvn-focal variable ({hint}); run-time settings such as the "
            "embargo or eta are sweep run config, not environment variables"
        )
    source = env.get("CVN_MARKET_SOURCE", "").strip()
    if source and source not in MARKET_SOURCES:
        raise SettingsError(
            f"CVN_MARKET_SOURCE: {source!r} is not one of {', '.join(MARKET_SOURCES)}"
        )
    csv_dir = env.get("CVN_CSV_DIR", "").strip()
    if source == "csv" and not csv_dir:
        raise SettingsError(
            "CVN_CSV_DIR: must name the folder of kline CSVs when CVN_MARKET_SOURCE=csv"
        )
    if csv_dir and not os.path.isdir(csv_dir):
        raise SettingsError(f"CVN_CSV_DIR: {csv_dir!r} is not a directory")
    parse_symbol_map(env.get("CVN_SYMBOL_MAP"))
    url = env.get("CVN_DATABASE_URL", "").strip()
    if url and not re.match(r"^[a-z][a-z0-9+]*://", url):
        raise SettingsError(
            f"CVN_DATABASE_URL: {url!r} is not a database URL like "
            "postgresql+psycopg2://user:pass@host/db or sqlite:////abs/path.sqlite"
        )
    paper_dir = env.get("CVN_PAPER_CSV_DIR", "").strip()
    if paper_dir and not os.path.isdir(paper_dir):
        raise SettingsError(f"CVN_PAPER_CSV_DIR: {paper_dir!r} is not a directory")
    paper_start = env.get("CVN_PAPER_START", "").strip()
    if paper_start:
        try:
            datetime.date.fromisoformat(paper_start)
        except ValueError:
            raise SettingsError(
                f"CVN_PAPER_START: {paper_start!r} is not a date like 2024-01-01"
            ) from None
    store = env.get("CVN_STORE_DIR", "").strip()
    if store and os.path.isfile(store):
        raise SettingsError(f"CVN_STORE_DIR: {store!r} is a file, not a directory")
    alerts_path = env.get("CVN_ALERTS_PATH", "").strip()
    if alerts_path and not os.path.isabs(alerts_path):
        raise SettingsError(
            f"CVN_ALERTS_PATH: {alerts_path!r} is not an absolute path (the JSONL file's full "
            "path, e.g. /var/lib/cvn/alerts.jsonl)"
        )
    if alerts_path and os.path.isdir(alerts_path):
        raise SettingsError(f"CVN_ALERTS_PATH: {alerts_path!r} is a directory, not a file")
    webhook = env.get("CVN_SLACK_WEBHOOK_URL", "").strip()
    if webhook and not re.match(r"^https?://[^/\s]+", webhook):
        # the value is a secret: name the variable, never echo the URL
        raise SettingsError(
            "CVN_SLACK_WEBHOOK_URL: not an http(s) URL with a host (value hidden, it is a "
            "secret); expected https://hooks.slack.com/services/..."
        )
    try:
        accelerated_clock(env)
        parse_synthetic_market(env.get(SYNTHETIC_MARKET_ENV))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def load_settings(environ: Mapping[str, str] | None = None) -> ProjectSettings:
    env = os.environ if environ is None else environ
    check_environment(env)
    return ProjectSettings(
        universe=parse_universe(env.get("CVN_UNIVERSE")),
        n_folds=parse_n_folds(env.get("CVN_N_FOLDS")),
        variants=parse_variants(env.get("CVN_VARIANTS")),
    )
