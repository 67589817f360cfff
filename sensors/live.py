"""The live loop's trigger: ``live_candles``, a sensor on the closed candles.

Why a sensor (not a schedule, not an automation condition): the trigger is an external fact
-- a candle has closed on the guard clock and exists in the feed -- that nothing in the asset
graph materializes, so an automation condition has nothing upstream to react to; a schedule
fires at fixed times whether or not the candle is there and does not catch up on its own after
the daemon was stopped. The sensor compares, per crypto with a live champion, the feed's
newest closed candle with the journal's last hour (one indexed ``MAX`` per crypto,
:func:`resources.journal.last_journaled_hours`) and, when a crypto is behind and no live run is
in flight, requests one run of ``live_job`` (``paper_trades``, ``monitoring_metrics``,
``guard_state``) for the day partitions from the first day a crypto is missing to the newest
one, over the cryptos with a champion (one rectangle of the crypto x day partitions per block
of neighbours in the universe: one run when all have one), tagged ``cvn/live=true``: the
run journals every closed hour not yet journaled, from the stored state
(:mod:`cvn_assets.assets.paper_trades`). After downtime the next tick catches up in one run.

Run keys hold the newest closed hour and a 10-minute bucket of the guard clock: a run that
failed is requested again 10 minutes later (the ``guard_stale`` alert pages after 2 hours);
a run in flight is never doubled. Default ``RUNNING``: journaling is what the guard's other
sensors read, and it trades nothing real.
"""

from typing import Any

import pandas as pd
from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from cvn_assets.partitions import SETTINGS
from resources.db import as_utc
from resources.guard_clock import GuardClock, guard_interval
from resources.journal import last_journaled_hours
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry
from sensors.runs import in_flight

LIVE_JOB = "live_job"
LIVE_SENSOR = "live_candles"
RETRY_BUCKET = "10min"
_HOUR = pd.Timedelta(hours=1)


def behind(
    newest: dict[str, pd.Timestamp | None],
    journaled: dict[str, pd.Timestamp | None],
    anchors: dict[str, pd.Timestamp],
) -> dict[str, pd.Timestamp]:
    """Per crypto behind the feed: the first hour to journal (the one after its journal,
    else its anchor: the first day after its first champion's training window)."""
    out = {}
    for c, top in newest.items():
        if top is None:
            continue
        last = journaled.get(c)
        first = anchors[c] if last is None else last + _HOUR
        if first <= top:
            out[c] = first
    return out


def crypto_blocks(cryptos: set[str] | dict[str, Any]) -> list[list[str]]:
    """``cryptos`` as runs of neighbours in the universe's order: a multi-partition range is a
    rectangle, so one run covers one contiguous block of cryptos (all five, normally)."""
    blocks: list[list[str]] = []
    previous = -2
    for i, c in enumerate(SETTINGS.universe):
        if c not in cryptos:
            continue
        if i == previous + 1:
            blocks[-1].append(c)
        else:
            blocks.append([c])
        previous = i
    return blocks


def live_run_request(
    block: list[str], first: dict[str, pd.Timestamp], newest: pd.Timestamp, now: pd.Timestamp
) -> RunRequest:
    """One ``live_job`` run over the cryptos of ``block`` (neighbours in the universe: the
    rectangle's crypto range) and the days from the first missing hour's to the newest
    closed hour's (``first``: the first hour to journal per crypto behind)."""
    d0 = min(first.values()).normalize()
    d1 = newest.normalize()
    start, end = f"{block[0]}|{d0:%Y-%m-%d}", f"{block[-1]}|{d1:%Y-%m-%d}"
    behind_text = ", ".join(f"{c} from {t:%Y-%m-%d %H:%M}" for c, t in sorted(first.items()))
    return RunRequest(
        run_key=f"live:{block[0]}-{block[-1]}:{newest:%Y-%m-%dT%H}:{now.floor(RETRY_BUCKET):%H%M}",
        job_name=LIVE_JOB,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: start,
            ASSET_PARTITION_RANGE_END_TAG: end,
            "cvn/live": "true",
            "cvn/live_through": f"{newest:%Y-%m-%dT%H:%M}",
            "cvn/live_behind": behind_text[:250],
        },
    )


def build_live_sensor(live_job: Any) -> Any:
    """The ``live_candles`` sensor of ``live_job`` (defined with the assets)."""

    @sensor(
        name=LIVE_SENSOR,
        job=live_job,
        minimum_interval_seconds=guard_interval(30),
        default_status=DefaultSensorStatus.RUNNING,
        description="The live loop: when a new hourly candle has closed (guard clock) and is "
        "in the feed, one live_job run journals every closed hour not yet journaled, from the "
        "stored state (paper_trades, monitoring_metrics, guard_state).",
    )
    def live_candles(
        context: SensorEvaluationContext,
        guard_clock: GuardClock,
        model_registry: ModelRegistry,
        market_data: MarketDataResource,
    ):
        now = pd.Timestamp(guard_clock.now())
        anchors = {}
        for c in SETTINGS.universe:
            history = model_registry.history(c, "champion")
            if history:
                first = model_registry.get_version(int(history[0]["version_id"]))
                anchors[c] = pd.Timestamp(as_utc(first["train_end"])).ceil("D")
        if not anchors:
            return SkipReason("no crypto has a champion yet: nothing to journal")
        newest = {c: market_data.last_closed_hour(c, now) for c in anchors}
        todo = behind(newest, last_journaled_hours(model_registry.engine, list(anchors)), anchors)
        if not todo:
            tops = {c: f"{t:%Y-%m-%d %H:%M}" for c, t in newest.items() if t is not None}
            return SkipReason(f"every crypto journaled through its newest closed candle {tops}")
        if in_flight(context, LIVE_JOB):
            return SkipReason(f"a {LIVE_JOB} run is in flight; behind: {sorted(todo)}")
        requests = []
        for block in crypto_blocks(anchors):  # the cryptos with a champion
            first = {c: todo[c] for c in block if c in todo}
            if first:
                top = max(t for c, t in newest.items() if c in first and t is not None)
                requests.append(live_run_request(block, first, top, now))
        return requests

    return live_candles
