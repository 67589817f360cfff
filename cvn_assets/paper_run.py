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
   14 *wall-clock* days since its promotion, and the replayed days are in the past), the
   crypto is promoted with ``force_promote``, actor ``make paper (demo)`` and a reason saying
   so -- audited in the alias history and printed;
5. ``paper_job`` for each of them over the same days.

It prints a per-crypto table (trades, hit rate, net expectancy, buy_proba quantiles, latency
p99) and, as its last line, a JSON summary ``{"champions": {crypto: variant}, "days": N,
"predictions": N, "trades": N, "metrics_rows": N}`` (journal rows of the replayed days).
Journal days are replaced, never appended: running it twice adds no rows.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa
from dagster import DagsterInstance

from cvn_assets import sweep
from cvn_assets.guard.monitoring import buy_proba_quantiles, latency_summary
from resources.journal import (
    monitoring_metrics_table,
    predictions_table,
    read_predictions,
    read_trades,
)
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry

DEMO_ACTOR = "make paper (demo)"
DEMO_REASON = (
    "demo replay: the canary's paper trades are a replay of past days, so the "
    "wall-clock canary rule cannot pass; promoted without it"
)


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
        """'' when the run succeeded, else its errors."""
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        res = self.defs.resolve_job_def(job).execute_in_process(
            run_config={**quiet, **(config or {})},
            instance=self.instance,
            raise_on_error=False,
            **kw,
        )
        if res.success:
            return ""
        errs = []
        for e in res.all_events:
            err = getattr(e.event_specific_data, "error", None)
            if err is not None:
                errs.append(err.message.strip().splitlines()[-1])
        return "; ".join(errs) or f"run {res.run_id} failed"

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
    runner: _Runner, canary: str, cryptos: list[str], first: str, last: str
) -> dict[str, str]:
    """Every other crypto's champion (the staged-rollout rule, else ``force_promote`` as the
    demo, audited) and its paper trading; crypto -> how it was promoted."""
    rollout: dict[str, str] = {}
    for crypto in cryptos:
        if crypto == canary:
            rollout[crypto] = "canary"
            continue
        err = runner.champion(crypto)
        if not err:
            rollout[crypto] = "canary rule passed"
        else:
            err2 = runner.champion(crypto, force_promote=True, actor=DEMO_ACTOR, reason=DEMO_REASON)
            if err2:
                runner.failures.append(f"champion_job {crypto}: {err2}")
                print(f"!! champion_job {crypto}: {err2}", file=sys.stderr)
                continue
            rollout[crypto] = "force_promote (demo): the canary rule refused"
            print(f"{crypto}: the staged-rollout rule refused ({err.split(': refused, ')[-1]});")
            print(f"  promoted with force_promote by {DEMO_ACTOR!r} (audited): {DEMO_REASON}")
        runner.paper(crypto, first, last)
    return rollout


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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.days < 1:
        print(f"--days must be >= 1, got {args.days}", file=sys.stderr)
        return 2
    home = sweep._ensure_home()
    if not args.skip_sweep:
        rc = sweep.main(["--quiet"] if args.quiet else [])
        if rc != 0:
            print(f"STOPPED: the sweep did not complete (exit status {rc})", file=sys.stderr)
            return rc
    # imported here, after the sweep: they validate every CVN_* variable when they load
    # (SettingsError), which sweep.main reports as one line and exit status 2
    from cvn_assets.definitions import defs
    from cvn_assets.partitions import SETTINGS

    runner = _Runner(defs, DagsterInstance.get(), args.canary)
    registry = ModelRegistry()
    cryptos = list(SETTINGS.universe)
    if args.canary not in cryptos:
        print(f"--canary {args.canary!r} is not in the universe {cryptos}", file=sys.stderr)
        return 2
    err = runner.champion(args.canary)
    if err:
        print(f"STOPPED: champion of the canary {args.canary} failed: {err}", file=sys.stderr)
        return 1
    champ = registry.alias(args.canary, "champion")
    first_day = _first_day(args, champ)
    last_day = first_day + pd.Timedelta(days=args.days - 1)
    first, last = f"{first_day:%Y-%m-%d}", f"{last_day:%Y-%m-%d}"
    print(f"DAGSTER_HOME={home}")
    print(
        f"canary {args.canary}: champion version {champ['id']} ({champ['variant']}); "
        f"paper trading {first} .. {last} ({args.days} days after its training window)"
    )
    runner.paper(args.canary, first, last)
    rollout = _roll_out(runner, args.canary, cryptos, first, last)

    # the table, from the journal
    hi = last_day + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    rows, champions, n_pred, n_trades = _table(registry, cryptos, rollout, first_day, hi)
    n_metrics, n_all_pred = _journal_counts(registry.engine, first_day, last_day)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"\npaper trading {first} .. {last} (fees 0.1% per side):")
        print(pd.DataFrame(rows).to_string(index=False))
    print(f"journal: {n_all_pred} predictions in total (all days)")
    if runner.failures:
        print("FAILED:\n  " + "\n  ".join(runner.failures), file=sys.stderr)
    summary = {
        "champions": champions,
        "days": args.days,
        "predictions": n_pred,
        "trades": n_trades,
        "metrics_rows": int(n_metrics or 0),
    }
    print(json.dumps(summary))
    return 1 if runner.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
