"""Hand-made journal hours for the guard's tests: the ``predictions`` rows that say how far a
crypto's journal reaches (its last journaled hour), written without touching its trades."""

from datetime import datetime, timedelta

import pandas as pd

from resources.journal import predictions_table, replace_day
from resources.model_registry import ModelRegistry


def journal_hours(url: str, crypto: str, version: int, first: datetime, last: datetime) -> int:
    """One HOLD prediction row (``buy_proba`` 0.3) of ``version`` for every hour from
    ``first`` to ``last`` (candle open times, aware; inclusive), day by day through
    :func:`resources.journal.replace_day` on ``predictions`` only (the trades of those days
    stay). Replaces the predictions of those days. Returns the rows written."""
    engine = ModelRegistry(database_url=url).engine
    hours = pd.date_range(first, last, freq="h")
    n = 0
    for day, group in pd.Series(hours, index=hours).groupby(hours.normalize()):
        rows = [
            {"crypto": crypto, "hour": h.to_pydatetime(), "model_version": version,
             "loss_function": "focal", "buy_proba": 0.3, "decision": "HOLD"}
            for h in group
        ]  # fmt: skip
        n += replace_day(engine, predictions_table, crypto, day, rows)
    return n


def journal_until(url: str, crypto: str, version: int, end: datetime) -> int:
    """The journal of ``crypto`` reaching ``end``: one row at the last hour whose candle
    closed by ``end`` (``floor(end, h) - 1 h``)."""
    last = pd.Timestamp(end).floor("h").to_pydatetime() - timedelta(hours=1)
    return journal_hours(url, crypto, version, last, last)
