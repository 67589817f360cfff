"""``paper_trades``: the guard's live loop, per crypto x UTC day (``day_crypto_partitions``).

Each run journals, for every crypto of its partitions, the hours whose candle has **closed**
on the guard clock (``guard_clock.now()``: the wall clock in production): the decision of the
champion live at that hour, the trades (a position carries over between hours and runs; it
exits when its barrier's candle has closed), the labels as they mature, and the day's
metadata (today's partition shows its hours so far; ``missing_hours`` / ``missing_hour_list``:
the day's hours without a candle -- an exchange outage or a row missing from the CSV -- also
logged as a warning: no decision at such an hour, and an open position meets the next candle
that exists, :mod:`cvn_assets.guard.paper`). Two paths, one replay
(:func:`cvn_assets.guard.paper.replay_hours`):

* **Live** (runs tagged ``cvn/live=true``: the ``live_candles`` sensor's): from the crypto's
  stored state (:mod:`resources.live_state`: last journaled hour, open position, measured
  latencies) the run replays only the hours after it, with the trailing
  :data:`~cvn_assets.guard.live_model.LIVE_WINDOW_BARS` candles for the features and the
  hours still unlabelled for the labels (:func:`~cvn_assets.guard.paper.hour_labels`): its
  cost does not grow with the deployment's age (``bench/bench_live_hour.py``). Nothing new:
  nothing written. A state that disagrees with the journal (rows deleted by hand), or a gap
  before the run's first day, falls back to the full path.
* **Full** (backfills and manual runs, and the first live run of a crypto): one replay from
  the first day after the first champion's training window up to the last closed hour of
  the run's days, as before the live loop (the carried position is re-derived), and the
  run's days journaled (``replace_days``). A full run that reaches the newest journaled hour
  writes the state too, so the live path continues from it.

The journal rows, the labels filled in and the state are written in **one** transaction
(:func:`resources.journal.replace_hours` / ``replace_days`` with ``on_write``). Re-running an
hour or a day changes nothing: the live path has nothing new, the full path writes the same
rows (the replay is a pure function of the candles, the registry's alias history and the
flag's audit history).

* **The model per hour**: the ``champion`` alias history of the registry, each version served
  from its stored artifact (:func:`cvn_assets.guard.live_model.live_model_from_calibrated`),
  live from its ``valid_from``; the first champion also stands for the hours before its
  promotion (a replay of the past). An hour before a model's ``train_end`` is refused
  (leakage), naming the hour and ``train_end``.
* **Shadow mode**: the ``candidate`` alias history gives the candidate live at each hour;
  its ``buy_proba`` and decision are journaled beside the champion's; it never trades.
* **trading_halted**: every hour uses the value that held at its decision (the candle's
  close) according to the flag's ``config_audit`` history (:mod:`cvn_assets.guard.flags`).
  While halted: no new entry, and an open position is closed at the next candle's open.
* **Fail-safe** (spec 6.4): when the flags cannot be read (the config store does not answer),
  a live run journals its new hours with **no new position** (``no_entry``: an open position
  keeps its barriers, the resting orders), journals why (``live_events``, kind
  ``flags_unreadable``), records a P1 ``guard_flags_unreadable`` alert (delivered by the
  ``alert_delivery`` sensor) and fails, so the run shows red. It never trades on an unknown
  flag. A full run cannot reconstruct the past without the flags: it fails, naming the cause.
* **Candles**: the closed candles up to now (:meth:`resources.market_data.MarketDataResource.
  load_candles_through`: the synthetic market continued with the same seed, bit-identical
  on the sweep's hours; or the CSV files as they grow).
* **Latency**: :func:`cvn_assets.guard.live_model.measure_latency` once per model version
  (stored in the live state and reused), median of ``latency_runs`` live decisions.
"""

import math
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Config,
    Failure,
    FreshnessPolicy,
    MetadataValue,
    asset,
)
from pydantic import Field

from cvn_assets.ablation.identity import module_digest
from cvn_assets.guard.drift import STALE_AFTER
from cvn_assets.guard.flags import FlagHistory
from cvn_assets.guard.live_model import (
    LIVE_WINDOW_BARS,
    CandidateSchedule,
    LiveModel,
    ModelSchedule,
    candidate_schedule,
    live_model_from_calibrated,
    measure_latency,
    model_schedule,
    top_feature_names,
)
from cvn_assets.guard.paper import (
    DEFAULT_FEE_PER_SIDE,
    Position,
    Replay,
    hour_labels,
    replay_hours,
)
from cvn_assets.market.candles_io import missing_hours
from cvn_assets.partitions import day_crypto_partitions, split_day_key
from resources.alerts import Alert, AlertSink, incident_id
from resources.config_store import HALT_FLAG, ConfigStore
from resources.db import as_utc
from resources.guard_clock import GuardClock
from resources.journal import (
    last_journaled_hours,
    read_predictions,
    read_trades,
    replace_days,
    replace_hours,
)
from resources.live_state import LiveState, read_live_state, record_event_in, write_state_in
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry
from resources.model_store import read_value
from resources.sweep_settings import SweepSettings

PAPER_ASSET = "paper_trades"
CHAMPION_ASSET = "champion_models"
#: the tag of the live loop's runs (``live_candles`` sensor): journal from the stored state
LIVE_TAG = "cvn/live"
FLAGS_UNREADABLE = "guard_flags_unreadable"
FLAGS_RUNBOOK = "runbooks/runbook_guard_flags_unreadable.md"
_PAPER_CODE = (
    "guard/paper.py",
    "guard/live_model.py",
    "guard/flags.py",
    "market/trading.py",
    "market/features.py",
    "ablation/calibrated_model.py",
)
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
#: Dagster's freshness policy (the UI's "Freshness" on the asset; the FreshnessDaemon): a live
#: hour materializes the day's partition about a minute after its candle closes, so a healthy
#: loop is never more than ~1 h behind; the ``guard_stale`` P2 pages on the journal itself at 2 h
WARN_AFTER = timedelta(hours=1, minutes=30)
_HOUR = pd.Timedelta(hours=1)
LABEL_LOOKAHEAD = pd.Timedelta(days=2)
"""Candles loaded after a full run's last day (where they exist), for its last labels."""
LABEL_BACKFILL = pd.Timedelta(days=2)
"""How far before a run's first hour it fills labels that were still NULL."""


class PaperConfig(Config):
    """Run config of ``paper_trades`` (launchpad: ``ops.paper_trades.config``)."""

    fee_per_side: float = Field(
        default=DEFAULT_FEE_PER_SIDE,
        ge=0.0,
        lt=0.5,
        description="fee per side as a fraction (0.001 = 0.1 %)",
    )
    latency_runs: int = Field(
        default=20, ge=1, description="timed live decisions per model version (measured once)"
    )


def halt_history(config_store: ConfigStore) -> FlagHistory:
    """``trading_halted`` over time, from its ``config_audit`` history (never the run-time
    value): the replay's ``halted`` is ``halt_history(...).is_value("true")``, the value at
    each hour's decision (:mod:`cvn_assets.guard.flags`). A history that does not parse:
    :class:`Failure`; a database that does not answer: the driver's error (the caller
    decides: the live path's fail-safe)."""
    try:
        return config_store.history(HALT_FLAG)
    except ValueError as exc:
        raise Failure(description=f"paper_trades: {HALT_FLAG} audit history: {exc}") from exc


def _read_flags(config_store: ConfigStore) -> tuple[FlagHistory | None, str | None]:
    """The halt history, or ``(None, why)`` when the config store cannot be read."""
    try:
        return halt_history(config_store), None
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"{type(exc).__name__}: {first}"


@asset(
    name=PAPER_ASSET,
    group_name="guard",
    partitions_def=day_crypto_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[AssetKey(CHAMPION_ASSET)],
    kinds={"sql"},
    code_version=module_digest(*_PAPER_CODE),
    freshness_policy=FreshnessPolicy.time_window(fail_window=STALE_AFTER, warn_window=WARN_AFTER),
    description="The live loop per crypto x day: every hour whose candle has closed on the "
    "guard clock, decided by the champion live at that hour and journaled (predictions, "
    "trades, labels as they mature); live runs continue from the stored state, backfills "
    "replay; trading_halted honoured; no new position on unreadable flags.",
)
def paper_trades(
    context: AssetExecutionContext,
    config: PaperConfig,
    sweep: SweepSettings,
    market_data: MarketDataResource,
    config_store: ConfigStore,
    model_registry: ModelRegistry,
    guard_clock: GuardClock,
    alert_sink: AlertSink,
) -> None:
    now = pd.Timestamp(guard_clock.now())
    newest = now.floor("h") - _HOUR  # the last candle closed at now
    live = context.run.tags.get(LIVE_TAG) == "true"
    halt, flags_error = _read_flags(config_store)
    if flags_error is not None and not live:
        raise Failure(
            description=f"paper_trades: {HALT_FLAG} cannot be read ({flags_error}); a backfill "
            "cannot replay the past without it"
        )
    done: dict[str, Any] = {}
    blocked: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {}
    for crypto, days in _days_by_crypto(context).items():
        if live and not model_registry.history(crypto, "champion"):
            context.log.info(f"{crypto}: no champion yet, nothing to journal")
            done[crypto] = {"path": "live: no champion"}
            continue
        job = _CryptoRun(context, config, sweep, market_data, model_registry, crypto, days)
        done[crypto] = job.journal(newest, now, halt, flags_error, live)
        if job.blocked is not None:
            blocked[crypto] = job.blocked
    context.add_asset_metadata({"run_summary": MetadataValue.json(done)})
    if flags_error is not None:
        _flags_alert(context, alert_sink, blocked, flags_error, now)


def _flags_alert(
    context: AssetExecutionContext,
    alert_sink: AlertSink,
    blocked: dict[str, tuple[pd.Timestamp, pd.Timestamp]],
    flags_error: str,
    now: pd.Timestamp,
) -> None:
    """The fail-safe's P1: recorded (the ``alert_delivery`` sensor delivers it), logged as an
    error; the run itself succeeds, since its journal is right."""
    cryptos = sorted(blocked)
    if not cryptos:
        return
    first = min(a for a, _ in blocked.values())
    last = max(b for _, b in blocked.values())
    message = (
        f"kill-switch flags unreadable ({flags_error}): hours {first:%Y-%m-%d %H:%M} .. "
        f"{last:%Y-%m-%d %H:%M} UTC of {', '.join(cryptos)} journaled with no new position"
    )
    alert = Alert(
        name=FLAGS_UNREADABLE,
        severity="P1",
        cryptos=tuple(cryptos),
        figures={
            "first_hour": first.isoformat(),
            "last_hour": last.isoformat(),
            "error": flags_error[:300],
        },
        incident_id=incident_id(FLAGS_UNREADABLE, cryptos, now.floor("h").to_pydatetime()),
        runbook=FLAGS_RUNBOOK,
        at=now.to_pydatetime(),
        message=message,
    )
    alert_sink.record(alert, now=now.to_pydatetime(), dagster_run_id=context.run.run_id)
    context.log.error(f"{FLAGS_UNREADABLE} (P1 recorded): {message}")


def _position_dict(pos: Position | None) -> dict[str, Any] | None:
    return None if pos is None else asdict(pos)


class _CryptoRun:
    """One crypto's journaling in a ``paper_trades`` run (module docstring: the two paths)."""

    def __init__(
        self,
        context: AssetExecutionContext,
        config: PaperConfig,
        sweep: SweepSettings,
        market_data: MarketDataResource,
        registry: ModelRegistry,
        crypto: str,
        days: list[pd.Timestamp],
    ) -> None:
        self.context, self.config, self.sweep = context, config, sweep
        self.market_data, self.engine = market_data, registry.engine
        self.crypto, self.days = crypto, days
        served: dict[int, LiveModel] = {}
        self.schedule, self.versions = champion_schedule(registry, crypto, served)
        self.shadow, self.cand_versions = candidate_schedule_of(registry, crypto, served)
        self.blocked: tuple[pd.Timestamp, pd.Timestamp] | None = None
        self.latency: dict[int, float] = {}
        #: open times of the candles this run loaded (None: it loaded none)
        self.candle_index: pd.DatetimeIndex | None = None

    # ------------------------------------------------------------------ the run
    def journal(
        self,
        newest: pd.Timestamp,
        now: pd.Timestamp,
        halt: FlagHistory | None,
        flags_error: str | None,
        live: bool,
    ) -> dict[str, Any]:
        """Journal the closed hours of the run's days; returns the crypto's run summary."""
        days, crypto = self.days, self.crypto
        try:
            feed = self.market_data.last_closed_hour(crypto, now)
        except ValueError as exc:
            raise Failure(description=f"paper_trades {crypto}: candle feed: {exc}") from exc
        last = min(days[-1] + pd.Timedelta(hours=23), newest)
        if feed is not None:
            last = min(last, feed)
        if last < days[0] or feed is None:
            raise Failure(
                description=f"paper_trades {crypto}: day {days[0]:%Y-%m-%d} has no closed "
                f"candle yet at {now:%Y-%m-%d %H:%M} UTC (guard clock; the feed's newest: "
                f"{'none' if feed is None else f'{feed:%Y-%m-%d %H:%M}'}): its first candle "
                f"closes at {days[0] + _HOUR:%Y-%m-%d %H:%M} UTC"
            )
        state = read_live_state(self.engine, crypto)
        start = self._live_start(state, days, live)
        if start is not None and start > last:
            path, first, n_p, n_t = "live: nothing new", None, 0, 0
        elif start is not None:
            assert state is not None
            path, first = "live", start
            n_p, n_t = self._live(start, last, state, halt, flags_error, now)
        else:
            if flags_error is not None:
                raise Failure(
                    description=f"paper_trades {crypto}: {HALT_FLAG} cannot be read "
                    f"({flags_error}) and there is no live state to continue from: nothing "
                    "journaled (a full replay needs the flag's history)"
                )
            path, first = "full", min(self._anchor(), days[0])
            n_p, n_t = self._full(last, state, halt, now)
        self.context.log.info(
            f"{crypto}: {path}; {n_p} predictions, {n_t} trades journaled"
            + ("" if first is None else f" (replayed {first:%Y-%m-%d %H:%M} .. {last:%H:%M})")
        )
        gaps = self._gaps(days, first, last)
        for day in days:
            meta = self._day_metadata(day, halt, flags_error, path)
            if self.candle_index is not None:
                missing = gaps.get(day, [])
                meta["missing_hours"] = len(missing)
                meta["missing_hour_list"] = ",".join(f"{h:%H:%M}" for h in missing) or "none"
            self.context.add_asset_metadata(meta, partition_key=f"{crypto}|{day:%Y-%m-%d}")
        return {
            "path": path,
            "days": len(days),
            "first_day": f"{days[0]:%Y-%m-%d}",
            "last_day": f"{days[-1]:%Y-%m-%d}",
            "replayed_from": None if first is None else f"{first:%Y-%m-%d %H:%M}",
            "last_closed_hour": f"{last:%Y-%m-%d %H:%M}",
            "predictions_written": n_p,
            "trades_written": n_t,
            "latency_ms": {int(v): round(x, 3) for v, x in self.latency.items()},
            "flags": "unreadable: no new position" if flags_error else "read",
            "missing_hours": sum(len(v) for v in gaps.values()),
        }

    def _gaps(
        self, days: list[pd.Timestamp], first: pd.Timestamp | None, last: pd.Timestamp
    ) -> dict[pd.Timestamp, list[pd.Timestamp]]:
        """Day -> the hours of the run's days up to ``last`` that have no candle (an outage,
        or a row missing from the CSV), logged as one warning per crypto. The replay treats
        bars positionally: no decision at a missing hour, and an open position meets the next
        candle that exists (:mod:`cvn_assets.guard.paper`, rules)."""
        if self.candle_index is None or first is None:
            return {}
        missing = missing_hours(self.candle_index, days[0], last)
        out: dict[pd.Timestamp, list[pd.Timestamp]] = {}
        for h in missing:
            if h.normalize() in days:
                out.setdefault(h.normalize(), []).append(h)
        n = sum(len(v) for v in out.values())
        if n:
            shown = ", ".join(f"{h:%Y-%m-%d %H:%M}" for v in out.values() for h in v[:5])
            self.context.log.warning(
                f"{self.crypto}: {n} replayed hour(s) have no candle ({shown}"
                f"{', ...' if n > 5 else ''}): no decision there; an open position meets the "
                "next candle that exists"
            )
        return out

    def _anchor(self) -> pd.Timestamp:
        """The first day after the first champion's training window."""
        return self.schedule.models[0].train_end.ceil("D")

    def _live_start(
        self, state: LiveState | None, days: list[pd.Timestamp], live: bool
    ) -> pd.Timestamp | None:
        """The live path's first hour (the one after the stored state), or None: full path."""
        if not live or state is None:
            return None
        journaled = last_journaled_hours(self.engine, [self.crypto])[self.crypto]
        if journaled != state.last_hour:
            self.context.log.warning(
                f"{self.crypto}: the live state ({state.last_hour}) disagrees with the journal "
                f"({journaled}): full replay"
            )
            return None
        nxt = state.last_hour + _HOUR
        if nxt < days[0]:
            raise Failure(
                description=f"paper_trades {self.crypto}: the journal ends at "
                f"{state.last_hour:%Y-%m-%d %H:%M} UTC, before this live run's first day "
                f"{days[0]:%Y-%m-%d}: run the days from {nxt:%Y-%m-%d} (the live_candles "
                "sensor does)"
            )
        return nxt

    # ------------------------------------------------------------------ the two paths
    def _live(
        self,
        start: pd.Timestamp,
        last: pd.Timestamp,
        state: LiveState,
        halt: FlagHistory | None,
        flags_error: str | None,
        now: pd.Timestamp,
    ) -> tuple[int, int]:
        """The hours ``start .. last`` from the stored state, in one transaction."""
        since = start - pd.Timedelta(hours=LIVE_WINDOW_BARS) - LABEL_BACKFILL
        candles = self._candles(last + _HOUR)
        candles = candles[candles.index >= since]
        self.latency = self._latencies(state.latency_ms, candles[candles.index < start])
        pos = None if state.position is None else Position(**state.position)
        rep = self._replay(candles, start, last, halt, pos, flags_error is not None)
        label = self.sweep.label
        labels = hour_labels(
            candles[candles.index >= start - LABEL_BACKFILL],
            start - LABEL_BACKFILL,
            start - _HOUR,
            take_profit=label.take_profit,
            stop_loss=label.stop_loss,
            horizon=label.horizon,
        )
        labels = labels[labels["label"].notna()]
        new_state = LiveState(self.crypto, last, _position_dict(rep.open_position), self.latency)
        run_id = self.context.run.run_id

        def on_write(conn: sa.Connection) -> None:
            write_state_in(conn, new_state, now=now.to_pydatetime(), run_id=run_id)
            if flags_error is not None:
                record_event_in(
                    conn, self.crypto, start, last, "flags_unreadable",
                    f"{HALT_FLAG} unreadable ({flags_error}): no new position opened",
                    now=now.to_pydatetime(), run_id=run_id,
                )  # fmt: skip

        if flags_error is not None:
            self.blocked = (start, last)
        return replace_hours(
            self.engine, self.crypto, start, last, rep.predictions, rep.trades,
            label_updates=labels, on_write=on_write,
        )  # fmt: skip

    def _full(
        self,
        last: pd.Timestamp,
        state: LiveState | None,
        halt: FlagHistory | None,
        now: pd.Timestamp,
    ) -> tuple[int, int]:
        """One replay from the anchor through ``last``; the run's days replaced."""
        days = self.days
        first = min(self._anchor(), days[0])
        # candles after the last day (those closed by now) feed only the labels
        end = min(days[-1] + pd.Timedelta(days=1) + LABEL_LOOKAHEAD, now.floor("h"))
        candles = self._candles(max(end, last + _HOUR))
        known = {} if state is None else state.latency_ms
        self.latency = self._latencies(known, candles[candles.index < days[0]])
        rep = self._replay(candles, first, last, halt, None, False)
        own = pd.DatetimeIndex(days)
        hour = rep.predictions["hour"]
        preds = rep.predictions[hour.dt.normalize().isin(own)]
        trades = rep.trades[rep.trades["exit_time"].dt.normalize().isin(own)]
        late = rep.predictions[
            (hour < days[0]) & (hour >= days[0] - LABEL_BACKFILL) & rep.predictions["label"].notna()
        ]
        run_id = self.context.run.run_id
        new_state = LiveState(self.crypto, last, _position_dict(rep.open_position), self.latency)

        def on_write(conn: sa.Connection) -> None:
            if state is None or last >= state.last_hour:
                write_state_in(conn, new_state, now=now.to_pydatetime(), run_id=run_id)

        return replace_days(
            self.engine, self.crypto, days, preds, trades, label_updates=late, on_write=on_write
        )

    # ------------------------------------------------------------------ inputs
    def _candles(self, end: pd.Timestamp) -> pd.DataFrame:
        """Closed candles with open time before ``end``; a ValueError becomes a Failure."""
        try:
            frame = self.market_data.load_candles_through(self.crypto, end)
        except ValueError as exc:
            raise Failure(description=f"paper_trades {self.crypto}: {exc}") from exc
        self.candle_index = pd.DatetimeIndex(frame.index)
        return frame

    def _latencies(self, known: dict[int, float], before: pd.DataFrame) -> dict[int, float]:
        """Decision latency per champion version: stored ones reused, new ones measured once
        on the trailing candles (median of ``latency_runs`` live decisions)."""
        window = before.iloc[-LIVE_WINDOW_BARS:]
        out = {}
        for m in self.schedule.models:
            ms = known.get(m.version)
            if ms is None or not math.isfinite(ms):
                ms = measure_latency(m, None, window, n=self.config.latency_runs).median_ms
            out[m.version] = float(ms)
        return out

    def _replay(
        self,
        candles: pd.DataFrame,
        first: pd.Timestamp,
        last: pd.Timestamp,
        halt: FlagHistory | None,
        pos: Position | None,
        blocked: bool,
    ) -> Replay:
        label = self.sweep.label
        try:
            return replay_hours(
                candles, None, first, last, self.schedule, crypto=self.crypto,
                take_profit=label.take_profit, stop_loss=label.stop_loss, horizon=label.horizon,
                fee_per_side=self.config.fee_per_side,
                halted=None if halt is None else halt.is_value("true"),
                open_position=pos, latency_ms=self.latency, candidates=self.shadow,
                no_entry=(lambda _h: True) if blocked else None,
            )  # fmt: skip
        except ValueError as exc:
            raise Failure(description=f"paper_trades {self.crypto}: {exc}") from exc

    # ------------------------------------------------------------------ metadata
    def _day_metadata(
        self, day: pd.Timestamp, halt: FlagHistory | None, flags_error: str | None, path: str
    ) -> dict[str, Any]:
        """A day's metadata from the journal as it now stands (today: its hours so far)."""
        end = day + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
        d_p = read_predictions(self.engine, self.crypto, day, end)
        d_t = read_trades(self.engine, self.crypto, day, end)
        meta = _day_metadata(
            d_p, d_t, halt, day, self.config, self.versions, self.cand_versions, flags_error
        )
        meta["hours_journaled"] = len(d_p)
        meta["last_journaled_hour"] = (
            f"{pd.Timestamp(d_p['hour'].iloc[-1]):%Y-%m-%d %H:%M}" if len(d_p) else "none"
        )
        meta["path"] = path
        return meta


def _days_by_crypto(context: AssetExecutionContext) -> dict[str, list[pd.Timestamp]]:
    out: dict[str, set[pd.Timestamp]] = {}
    for key in context.partition_keys:
        crypto, day = split_day_key(key)
        out.setdefault(crypto, set()).add(pd.Timestamp(day, tz="UTC"))
    return {c: sorted(d) for c, d in sorted(out.items())}


def _served(
    registry: ModelRegistry,
    v: int,
    models: dict[int, LiveModel],
    versions: dict[int, dict[str, Any]],
) -> LiveModel:
    """Model version ``v`` served from its stored artifact (cached in ``models``), with its
    registered loss function, ``train_end`` and top features (``reference_stats``)."""
    if v not in models:
        version = registry.get_version(v)
        if version is None:
            raise Failure(description=f"model version {v} is not in the registry")
        cal = read_value(Path(version["artifact_uri"]))
        models[v] = live_model_from_calibrated(
            cal,
            version=v,
            train_end=pd.Timestamp(as_utc(version["train_end"])),
            loss_function=version["loss_function"],
            top_features=top_feature_names(version["reference_stats"]),
        )
        versions[v] = version
    return models[v]


def champion_schedule(
    registry: ModelRegistry,
    crypto: str,
    models: dict[int, LiveModel] | None = None,
) -> tuple[ModelSchedule, dict[int, dict[str, Any]]]:
    """The champion live at each hour, from the alias history and the stored artifacts.

    Each version is live from its ``valid_from``; the first one also from before (hours
    replayed before the first promotion). ``models``: a cache of served versions (filled).
    Returns the schedule and the versions by id."""
    history = registry.history(crypto, "champion")
    if not history:
        raise Failure(
            description=f"{crypto} has no champion: materialize champion_models for it first"
        )
    versions: dict[int, dict[str, Any]] = {}
    models = {} if models is None else models
    changes: list[tuple[pd.Timestamp, LiveModel]] = []
    for row in history:
        v = int(row["version_id"])
        _served(registry, v, models, versions)
        when = _EPOCH if not changes else pd.Timestamp(row["valid_from"])
        if changes and changes[-1][1].version == v:
            continue
        if changes and when <= changes[-1][0]:
            changes[-1] = (changes[-1][0], models[v])
        else:
            changes.append((when, models[v]))
    return model_schedule(changes), versions


def candidate_schedule_of(
    registry: ModelRegistry,
    crypto: str,
    models: dict[int, LiveModel] | None = None,
) -> tuple[CandidateSchedule, dict[int, dict[str, Any]]]:
    """The ``candidate`` (shadow mode) live at each hour, from the alias history: each
    version from its ``valid_from`` to its ``valid_to`` (none after a ``valid_to`` that no new
    assignment follows, none before the first). ``models``: a cache of served versions.
    Returns the schedule (empty: never a candidate) and the candidate versions by id."""
    versions: dict[int, dict[str, Any]] = {}
    models = {} if models is None else models
    changes: list[tuple[pd.Timestamp, LiveModel | None]] = []

    def at(when: pd.Timestamp, model: LiveModel | None) -> None:
        if changes and when <= changes[-1][0]:
            changes[-1] = (changes[-1][0], model)  # same instant: the later change wins
        else:
            changes.append((when, model))

    for row in registry.history(crypto, "candidate"):
        at(
            pd.Timestamp(row["valid_from"]),
            _served(registry, int(row["version_id"]), models, versions),
        )
        if row["valid_to"] is not None:
            at(pd.Timestamp(row["valid_to"]), None)
    return candidate_schedule(changes), versions


def _halt_metadata(history: FlagHistory, day: pd.Timestamp) -> str:
    """How the halt applied on ``day``: halted decision hours and the changes in the day."""
    hours = pd.date_range(day, periods=24, freq="h")
    n = int((history.at_decisions(hours) == "true").sum())
    changes = history.changes_within(day, day + pd.Timedelta(days=1))
    what = ", ".join(f"{t:%H:%M:%S} -> {v}" for t, v in changes)
    return f"halted at {n}/24 decision hours" + (f" (changes: {what})" if what else "")


def _summary(trades: pd.DataFrame, preds: pd.DataFrame) -> dict[str, Any]:
    net = trades["net_return"].astype(float)
    return {
        "predictions": len(preds),
        "buy_signals": int((preds["decision"] == "BUY").sum()),
        "trades": len(trades),
        "hit_rate": round(float((net > 0).mean()), 4) if len(net) else None,
        "net_expectancy": round(float(net.mean()), 6) if len(net) else None,
        "halt_exits": int((trades["barrier"] == "halt").sum()),
    }


def _variants_of(versions: pd.Series, registered: dict[int, dict[str, Any]]) -> str:
    """The registered variants of the model versions in ``versions``, sorted, comma-joined."""
    return ",".join(sorted({str(registered[int(v)]["variant"]) for v in versions.unique()}))


def _day_metadata(
    d_p: pd.DataFrame,
    d_t: pd.DataFrame,
    halt: FlagHistory | None,
    day: pd.Timestamp,
    config: PaperConfig,
    versions: dict[int, dict[str, Any]],
    cand_versions: dict[int, dict[str, Any]],
    flags_error: str | None = None,
) -> dict[str, Any]:
    """One day's asset metadata: its summary, the halt, the models and candidates live."""
    candidates = d_p["candidate_version"].dropna()
    return {
        **_summary(d_t, d_p),
        "buy_proba_mean": round(float(d_p["buy_proba"].mean()), 4) if len(d_p) else None,
        HALT_FLAG: (
            _halt_metadata(halt, day)
            if halt is not None
            else f"unknown ({flags_error}): no new position in this run's hours"
        ),
        "fee_per_side": config.fee_per_side,
        "model_version": ",".join(str(v) for v in sorted(d_p["model_version"].unique())),
        "variant": _variants_of(d_p["model_version"], versions),
        "candidate_version": ",".join(str(int(v)) for v in sorted(candidates.unique())),
        "candidate_variant": _variants_of(candidates, cand_versions),
        "labels_known": int(d_p["label"].notna().sum()),
    }
