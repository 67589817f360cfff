"""``make paper``: the default sweep, its champions, then 90 days of paper trading.

``python -m cvn_assets.paper_run`` (what ``make paper`` calls), on the real Dagster instance in
``$DAGSTER_HOME`` (default ``./.dagster_home``), every job executed in process:

1. the sweep's one command (:func:`cvn_assets.sweep.main`; reuses everything when the sweep is
   done);
2. ``champion_job`` for the canary (BTCUSDC): the locked variant or the baseline, promoted;
3. ``paper_job`` (``paper_trades`` -> ``monitoring_metrics``) over the ``--days`` days after
   the canary champion's training window, one single-run backfill;
4. ``champion_job`` for every other crypto: first under the staged-rollout rule; when it
   refuses (on the embedded default it must: the rule counts the canary's trades of the last
   14 *wall-clock* days since its promotion, and the replayed days are in the past -- or the
   canary never trades, its trading threshold being "none"), the crypto is promoted with
   ``force_promote``, actor ``make paper (demo)`` and a reason naming the refusal's actual
   cause (:func:`demo_reason`) -- audited in the alias history and printed;
5. ``paper_job`` for each of them over the same days.

It prints a per-crypto table (trading threshold, trades, hit rate, net expectancy, buy_proba
quantiles, latency p99), a line per crypto whose champion does not trade (its trading
threshold is "none (do not trade)") saying why, a ``WARNING`` line per crypto whose replayed
candles miss hours (:func:`cvn_assets.market.candles_io.missing_hours`; no decision at a
missing hour, an open position meets the next candle that exists), and, as its last line, a
JSON summary ``{"champions": {crypto: variant}, "days": N, "predictions": N, "trades": N,
"metrics_rows": N, "missing_hours": {crypto: N}}`` (journal rows of the replayed days). Journal
days are replaced, never appended: running it twice adds no rows.

Bad input is refused in one line on stderr with exit status 2, before any run (as the sweep
command): an invalid ``CVN_*`` variable (e.g. ``CVN_PAPER_START=2023-13-01``), a ``--canary``
outside the universe, replayed days before the day partitions' first day, a results database
that does not answer. A job that fails prints its innermost cause
(:func:`cvn_assets.run_errors.run_failure_line`), not Dagster's traceback.
"""

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa
from dagster import DagsterInstance

from cvn_assets import sweep
from cvn_assets.guard.monitoring import buy_proba_quantiles, latency_summary
from cvn_assets.market.candles_io import missing_hours
from cvn_assets.run_errors import config_error_line, message_line, run_failure_line
from cvn_assets.settings import SettingsError
from resources.db import database_url, redact_url
from resources.journal import (
    monitoring_metrics_table,
    predictions_table,
    read_predictions,
    read_trades,
)
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry

DEMO_ACTOR = "make paper (demo)"


def demo_reason(refusal: str, canary: str, canary_trades: int, canary_threshold: Any) -> str:
    """The audited reason of a demo ``force_promote``: the cause of the staged-rollout rule's
    ``refusal``, as it is. No canary trade at all because the canary's champion does not trade
    (trading threshold none) is said so; canary trades that exist only in replayed past days
    are outside the rule's window of the last wall-clock days."""
    why = refusal.split(": refused, ")[-1]
    if canary_trades == 0 and canary_threshold is None:
        cause = (
            f"the canary {canary}'s champion never trades (trading threshold none: do not "
            "trade), so it has no canary trade and the rule cannot pass"
        )
    elif canary_trades == 0:
        cause = f"the canary {canary} made no paper trade in the replayed days"
    else:
        cause = (
            f"the canary {canary}'s {canary_trades} paper trades are in replayed past days, "
            "outside the rule's window of the last wall-clock days"
        )
    return f"demo replay: the staged-rollout rule refused ({why}): {cause}; promoted without it"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90, help="days replayed after the window")
    parser.add_argument(
        "--first-day",
        default=None,
        help="first replayed day (default: the day after the canary's training window, or the "
        "first day of the paper-trading candles when they start later)",
    )
    parser.add_argument("--canary", default="BTCUSDC", help="the crypto promoted first")
    parser.add_argument("--skip-sweep", action="store_true", help="do not call the sweep")
    parser.add_argument("--quiet", action="store_true", help="no per-training progress lines")
    return parser.parse_args(argv)


class _Runner:
    """Jobs executed in process on the instance; errors are reported by this command, one
    line each (an expected refusal of the canary rule would otherwise print Dagster's whole
    traceback). ``failures`` collects the paper runs that failed."""

    def __init__(self, defs: Any, instance: DagsterInstance, canary: str) -> None:
        self.defs, self.instance, self.canary = defs, instance, canary
        self.failures: list[str] = []

    def run(self, job: str, config: dict[str, Any] | None = None, **kw: Any) -> str:
        """'' when the run succeeded, else its innermost cause in one line (run config that
        Dagster's schema refuses: no run exists)."""
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        try:
            res = self.defs.resolve_job_def(job).execute_in_process(
                run_config={**quiet, **(config or {})},
                instance=self.instance,
                raise_on_error=False,
                **kw,
            )
        except Exception as exc:  # DagsterInvalidConfigError and the like: before any run
            return config_error_line(exc)
        return run_failure_line(res)

    def champion(self, crypto: str, **cfg: Any) -> str:
        ops = {"ops": {"champion_models": {"config": {"canary": self.canary, **cfg}}}}
        return self.run("champion_job", ops, partition_key=crypto)

    def paper(self, crypto: str, first: str, last: str) -> None:
        err = self.run(
            "paper_job",
            tags=sweep._range_tags(f"{crypto}|{first}", f"{crypto}|{last}"),
        )
        if err:
            self.failures.append(f"paper_job {crypto} {first}..{last}: {err}")
            print(f"!! paper_job {crypto}: {err}", file=sys.stderr)


def _first_day(args: argparse.Namespace, champ: dict[str, Any]) -> pd.Timestamp:
    """The day after the canary champion's training window (or the first day of the paper
    candles when they start later); ``--first-day`` overrides."""
    first_day = pd.Timestamp(champ["train_end"]).ceil("D")
    later = MarketDataResource().paper_candles(args.canary)
    if later is not None:  # real data: the paper folder may start after a gap
        after = later.index[later.index >= first_day]
        if len(after):
            first_day = max(first_day, after[0].ceil("D"))
    if args.first_day:
        first_day = pd.Timestamp(args.first_day, tz="UTC")
    return first_day


def _roll_out(
    runner: _Runner,
    registry: ModelRegistry,
    cryptos: list[str],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
) -> dict[str, str]:
    """Every other crypto's champion (the staged-rollout rule, else ``force_promote`` as the
    demo, audited with :func:`demo_reason`) and its paper trading; crypto -> how it was
    promoted."""
    canary, first, last = runner.canary, f"{lo:%Y-%m-%d}", f"{hi:%Y-%m-%d}"
    champ = registry.alias(canary, "champion") or {}
    canary_trades = len(read_trades(registry.engine, canary, lo, hi))
    threshold = (champ.get("reference_stats") or {}).get("trading_threshold")
    rollout: dict[str, str] = {}
    for crypto in cryptos:
        if crypto == canary:
            rollout[crypto] = "canary"
            continue
        err = runner.champion(crypto)
        if not err:
            rollout[crypto] = "canary rule passed"
        else:
            reason = demo_reason(err, canary, canary_trades, threshold)
            err2 = runner.champion(crypto, force_promote=True, actor=DEMO_ACTOR, reason=reason)
            if err2:
                runner.failures.append(f"champion_job {crypto}: {err2}")
                print(f"!! champion_job {crypto}: {err2}", file=sys.stderr)
                continue
            rollout[crypto] = "force_promote (demo): the canary rule refused"
            print(f"{crypto}: promoted with force_promote by {DEMO_ACTOR!r} (audited): {reason}")
        runner.paper(crypto, first, last)
    return rollout


def threshold_text(reference_stats: dict[str, Any] | None) -> str:
    """A champion's trading threshold as printed: the number, or ``none (do not trade)``."""
    t = (reference_stats or {}).get("trading_threshold")
    return "none (do not trade)" if t is None else f"{float(t):.4f}"


def no_trade_reason(crypto: str, reference_stats: dict[str, Any] | None) -> str:
    """Why a champion with trading threshold none never trades (one line)."""
    share = float((reference_stats or {}).get("min_trade_share", 0.10))
    return (
        f"{crypto}: trading threshold none (do not trade): on its calibration block no BUY "
        f"threshold trading in >= {share:.0%} of the hours had a positive mean net return "
        "after fees, so the champion logs its signals and opens no trade"
    )


def gap_warnings(
    market: MarketDataResource, cryptos: list[str], lo: pd.Timestamp, hi: pd.Timestamp
) -> dict[str, list[pd.Timestamp]]:
    """crypto -> the replayed hours in ``[lo, hi]`` without a candle (where there are some)."""
    out = {}
    for crypto in cryptos:
        frame = market.load_candles_through(crypto, hi + pd.Timedelta(hours=1))
        last = min(hi, frame.index[-1]) if len(frame) else lo - pd.Timedelta(hours=1)
        missing = missing_hours(frame.index, lo, last)
        if missing:
            out[crypto] = missing
    return out


def _table(
    registry: ModelRegistry,
    cryptos: list[str],
    rollout: dict[str, str],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
) -> tuple[list[dict[str, Any]], dict[str, str], int, int]:
    """The per-crypto rows from the journal, the champions' variants, and the numbers of
    predictions and trades in ``[lo, hi]``."""
    engine = registry.engine
    rows = []
    champions: dict[str, str] = {}
    n_pred = n_trades = 0
    for crypto in cryptos:
        c = registry.alias(crypto, "champion")
        if c is None:
            continue
        champions[crypto] = c["variant"]
        preds = read_predictions(engine, crypto, lo, hi)
        trades = read_trades(engine, crypto, lo, hi)
        n_pred += len(preds)
        n_trades += len(trades)
        net = trades["net_return"].astype(float)
        q = buy_proba_quantiles(preds["buy_proba"].to_numpy(float))
        lat = latency_summary(preds["latency_ms"].dropna().to_numpy(float))
        rows.append(
            {
                "crypto": crypto,
                "variant": c["variant"],
                "rollout": rollout.get(crypto, "?"),
                "trading_threshold": threshold_text(c.get("reference_stats")),
                "trades": len(trades),
                "hit_rate": round(float((net > 0).mean()), 3) if len(net) else None,
                "net_expectancy": round(float(net.mean()), 5) if len(net) else None,
                **{f"p_{k[1:]}": round(float(q[k]), 3) for k in ("p05", "p50", "p95")},  # type: ignore[literal-required]
                "latency_p99_ms": round(float(lat["p99"]), 2),
            }
        )
    return rows, champions, n_pred, n_trades


def _journal_counts(
    engine: sa.Engine, first_day: pd.Timestamp, last_day: pd.Timestamp
) -> tuple[int | None, int | None]:
    """Monitoring rows of the replayed days, predictions of all days."""
    with engine.connect() as conn:
        n_metrics = conn.execute(
            sa.select(sa.func.count())
            .select_from(monitoring_metrics_table)
            .where(monitoring_metrics_table.c.day.between(first_day.date(), last_day.date()))
        ).scalar()
        n_all_pred = conn.execute(
            sa.select(sa.func.count()).select_from(predictions_table)
        ).scalar()
    return n_metrics, n_all_pred


def _refuse(message: str) -> int:
    """One line on stderr, exit status 2 (the sweep command's pattern)."""
    return sweep._refuse(" ".join(message.split()))


def _database_refusal() -> str | None:
    """The refusal when the results database (registry, journal, flags) does not answer."""
    url = database_url()
    try:
        with ModelRegistry().engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        cause = message_line(f"{type(exc).__name__}: {exc}")
        return f"refused: the results database {redact_url(url)} does not answer ({cause})"
    return None


def _partition_refusal(first_day: pd.Timestamp) -> str | None:
    """The refusal when the replayed days start before the day partitions' first day."""
    from cvn_assets.partitions import PAPER_START

    if first_day < pd.Timestamp(PAPER_START, tz="UTC"):
        return (
            f"refused: the replayed days start {first_day:%Y-%m-%d}, before the day "
            f"partitions' first day {PAPER_START} (CVN_PAPER_START): set "
            f"CVN_PAPER_START={first_day:%Y-%m-%d} or --first-day >= {PAPER_START}"
        )
    return None


def _load_definitions() -> tuple[Any, list[str]] | str:
    """The definitions and the universe, or the refusal of an invalid ``CVN_*`` variable
    (they validate every one when they load)."""
    try:
        from cvn_assets.definitions import defs
        from cvn_assets.partitions import SETTINGS
    except SettingsError as exc:
        return f"invalid environment: {exc}"
    return defs, list(SETTINGS.universe)


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", module=r"dagster(\..*)?$")  # beta/preview notices
    args = _parse_args(argv)
    if args.days < 1:
        return _refuse(f"--days must be >= 1, got {args.days}")
    home = sweep._ensure_home()
    if not args.skip_sweep:
        rc = sweep.main(["--quiet"] if args.quiet else [])
        if rc != 0:
            print(f"STOPPED: the sweep did not complete (exit status {rc})", file=sys.stderr)
            return rc
    loaded = _load_definitions()
    if isinstance(loaded, str):
        return _refuse(loaded)
    defs, cryptos = loaded
    if args.canary not in cryptos:
        return _refuse(f"--canary: {args.canary!r} is not in the universe {cryptos}")
    refusal = _database_refusal()
    if refusal:
        return _refuse(refusal)
    runner = _Runner(defs, DagsterInstance.get(), args.canary)
    registry = ModelRegistry()
    err = runner.champion(args.canary)
    if err:
        print(f"STOPPED: champion of the canary {args.canary} failed: {err}", file=sys.stderr)
        return 1
    champ = registry.alias(args.canary, "champion")
    first_day = _first_day(args, champ)
    refusal = _partition_refusal(first_day)
    if refusal:
        return _refuse(refusal)
    return _replay_and_report(args, home, runner, registry, cryptos, champ, first_day)


def _replay_and_report(
    args: argparse.Namespace,
    home: Any,
    runner: _Runner,
    registry: ModelRegistry,
    cryptos: list[str],
    champ: dict[str, Any],
    first_day: pd.Timestamp,
) -> int:
    """Paper trading of every crypto (the canary first), then the table and the summary."""
    last_day = first_day + pd.Timedelta(days=args.days - 1)
    first, last = f"{first_day:%Y-%m-%d}", f"{last_day:%Y-%m-%d}"
    hi = last_day + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    print(f"DAGSTER_HOME={home}")
    print(
        f"canary {args.canary}: champion version {champ['id']} ({champ['variant']}); "
        f"paper trading {first} .. {last} ({args.days} days after its training window)"
    )
    runner.paper(args.canary, first, last)
    rollout = _roll_out(runner, registry, cryptos, first_day, hi)

    # the table, from the journal
    rows, champions, n_pred, n_trades = _table(registry, cryptos, rollout, first_day, hi)
    n_metrics, n_all_pred = _journal_counts(registry.engine, first_day, last_day)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"\npaper trading {first} .. {last} (fees 0.1% per side):")
        print(pd.DataFrame(rows).to_string(index=False))
    for crypto in champions:
        stats = (registry.alias(crypto, "champion") or {}).get("reference_stats")
        if (stats or {}).get("trading_threshold") is None:
            print(no_trade_reason(crypto, stats))
    gaps = gap_warnings(
        MarketDataResource(), list(champions), first_day, last_day + pd.Timedelta(hours=23)
    )
    for crypto, missing in gaps.items():
        shown = ", ".join(f"{h:%Y-%m-%d %H:%M}" for h in missing[:5])
        print(
            f"WARNING: {crypto}: {len(missing)} replayed hour(s) have no candle ({shown}"
            f"{', ...' if len(missing) > 5 else ''}): no decision there; an open position "
            "meets the next candle that exists (README: Paper trading, missing candles)",
            file=sys.stderr,
        )
    print(f"journal: {n_all_pred} predictions in total (all days)")
    if runner.failures:
        print("FAILED:\n  " + "\n  ".join(runner.failures), file=sys.stderr)
    summary = {
        "champions": champions,
        "days": args.days,
        "predictions": n_pred,
        "trades": n_trades,
        "metrics_rows": int(n_metrics or 0),
        "missing_hours": {c: len(m) for c, m in gaps.items()},
    }
    print(json.dumps(summary))
    return 1 if runner.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
