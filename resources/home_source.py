"""The data source of a Dagster home: recorded by its first materialization, then enforced.

A home made on real candles must not silently receive synthetic candles because it was opened
without the ``CVN_*`` variables (or the other way round). The first market or sweep step in a
``DAGSTER_HOME`` writes ``$DAGSTER_HOME/cvn_data_source.json`` (``{"source": "synthetic"}`` or
``{"source": "csv", "csv_dir": "/abs/path"}``); any later step whose market-data resource
points elsewhere is refused before any work, naming both sources and how to re-target the home
on purpose (``python -m cvn_assets.sweeps retarget-data-source``, or another ``DAGSTER_HOME``).
"""

import json
import os
from pathlib import Path
from typing import Any

RECORD_NAME = "cvn_data_source.json"


class HomeDataSourceConflict(RuntimeError):
    """The home was made on another data source; the message names both."""


def home_dir() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or (Path.cwd() / ".dagster_home")).resolve()


def record_path(home: Path | None = None) -> Path:
    return (home or home_dir()) / RECORD_NAME


def _describe(src: dict[str, Any]) -> str:
    if src.get("source") == "csv":
        return f"csv files in {src.get('csv_dir')}"
    return str(src.get("source"))


def recorded_source(home: Path | None = None) -> dict[str, Any] | None:
    path = record_path(home)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def ensure_home_source(source: dict[str, Any], home: Path | None = None) -> str:
    """Record ``source`` for a new home, or check it against the record.

    Returns ``"recorded"`` or ``"same"``; raises :class:`HomeDataSourceConflict` otherwise.
    """
    home = home or home_dir()
    old = recorded_source(home)
    if old is None:
        write_home_source(source, home)
        return "recorded"
    if old == source:
        return "same"
    raise HomeDataSourceConflict(
        f"DAGSTER_HOME {home} holds data from {_describe(old)}, but this run's market data is "
        f"{_describe(source)} (check CVN_MARKET_SOURCE / CVN_CSV_DIR). Nothing was done. To "
        f"re-target this home on purpose: `python -m cvn_assets.sweeps retarget-data-source` "
        f"with the new variables set; or use another DAGSTER_HOME."
    )


def write_home_source(source: dict[str, Any], home: Path | None = None) -> None:
    path = record_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(source, sort_keys=True))
    os.replace(tmp, path)
