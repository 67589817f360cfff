"""The sweeps of a home: list them, show one's identity, compare two, re-target the data source.

- ``python -m cvn_assets.sweeps list``: every sweep id with its identity fingerprint, data
  source and result row count;
- ``python -m cvn_assets.sweeps show ID``: the identity (settings, definition, data, code);
- ``python -m cvn_assets.sweeps compare A B [--html]``: per-variant mean f1_buy, ECE_HOLD
  (primary calibration) and net expectancy of both sweeps, their deltas (B - A), and every
  setting that differs; ``--html`` also writes ``$DAGSTER_HOME/reports/compare/A_vs_B.html``;
- ``python -m cvn_assets.sweeps retarget-data-source``: record the data source of the current
  ``CVN_MARKET_SOURCE`` / ``CVN_CSV_DIR`` as the home's (on purpose, after a refusal).

The results store is the one the sweep uses (``CVN_DATABASE_URL``, else SQLite under
``$DAGSTER_HOME``).
"""

import argparse
import html
import json
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd

from cvn_assets.ablation.identity import describe_diff, identity_diff
from resources.home_source import home_dir, recorded_source, write_home_source
from resources.results_store import ResultsStore


def compare_sweeps(
    results_a: pd.DataFrame,
    results_b: pd.DataFrame,
    identity_a: dict[str, Any],
    identity_b: dict[str, Any],
) -> tuple[pd.DataFrame, list[tuple[str, Any, Any]]]:
    """Per-variant side-by-side means of two sweeps' ``finetune_results`` and their deltas.

    Columns: ``f1_buy``, ``ece_hold`` (each sweep's primary calibration), ``expectancy_net``,
    each as ``<metric>_a``, ``<metric>_b`` and ``<metric>_delta`` (b - a); ``cells_a`` /
    ``cells_b``. Variants present in only one sweep have NaN on the other side. Also returns
    the identity diff ``[(dotted path, a, b)]``.
    """

    def per_variant(frame: pd.DataFrame, identity: dict[str, Any]) -> pd.DataFrame:
        if frame.empty:
            return pd.DataFrame(columns=["cells", "f1_buy", "ece_hold", "expectancy_net"])
        primary = identity.get("settings", {}).get("primary_calibration", "temperature")
        f = frame.assign(ece_hold=frame[f"ece_hold_{primary}"])
        return f.groupby("variant", sort=False).agg(
            cells=("f1_buy", "size"),
            f1_buy=("f1_buy", "mean"),
            ece_hold=("ece_hold", "mean"),
            expectancy_net=("expectancy_net", "mean"),
        )

    a = per_variant(results_a, identity_a).add_suffix("_a")
    b = per_variant(results_b, identity_b).add_suffix("_b")
    table = a.join(b, how="outer")
    for m in ("f1_buy", "ece_hold", "expectancy_net"):
        table[f"{m}_delta"] = table[f"{m}_b"] - table[f"{m}_a"]
    order = ["cells_a", "cells_b"] + [
        f"{m}_{s}" for m in ("f1_buy", "ece_hold", "expectancy_net") for s in ("a", "b", "delta")
    ]
    return table[order], identity_diff(identity_a, identity_b)


def _store() -> Any:
    return ResultsStore()


def _cmd_list(_args: argparse.Namespace) -> int:
    store = _store()
    frame = store.list_sweeps()
    if frame.empty:
        print(f"no sweeps in {store.url_redacted}")
        return 0
    print(f"sweeps in {store.url_redacted}:")
    print(frame.to_string(index=False))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    rec = _store().require_sweep(args.sweep_id)
    print(f"sweep {args.sweep_id!r}: identity {rec['fingerprint']} ({rec['data_source']})")
    print(json.dumps(rec["identity"], indent=2, sort_keys=True))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    store = _store()
    rec_a, rec_b = store.require_sweep(args.a), store.require_sweep(args.b)
    table, diff = compare_sweeps(
        store.load_results(args.a), store.load_results(args.b), rec_a["identity"], rec_b["identity"]
    )
    print(f"A = {args.a!r} (identity {rec_a['fingerprint']})")
    print(f"B = {args.b!r} (identity {rec_b['fingerprint']})")
    print("\nsettings that differ (A -> B): " + (describe_diff(diff, limit=50) or "none"))
    with pd.option_context("display.width", 220, "display.max_columns", 30):
        print("\nper-variant means (delta = B - A):")
        print(table.to_string(float_format=lambda x: f"{x:.6f}"))
    if args.html:
        # not at the top: importing the asset modules loads and validates every CVN_* variable
        # and Dagster (seconds); list, show and compare without --html need neither
        from cvn_assets.assets.results import report_dir

        out = report_dir("compare") / f"{args.a}_vs_{args.b}.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(comparison_html(args.a, args.b, rec_a, rec_b, table, diff), "utf-8")
        print(f"\nreport: {out}")
    return 0


def comparison_html(
    a: str,
    b: str,
    rec_a: dict[str, Any],
    rec_b: dict[str, Any],
    table: pd.DataFrame,
    diff: list[tuple[str, Any, Any]],
) -> str:
    """A self-contained HTML page: the two identities, what differs, the per-variant table."""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(repr(x))}</td>"
        f"<td>{html.escape(repr(y))}</td></tr>"
        for k, x, y in diff
    )
    title = f"cvn-focal: sweep {a} vs {b}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>A = {html.escape(a)} (identity {rec_a['fingerprint']}), "
        f"B = {html.escape(b)} (identity {rec_b['fingerprint']})</p>"
        "<h2>What differs (A -> B)</h2>"
        + (
            f"<table><tr><th>field</th><th>A</th><th>B</th></tr>{rows}</table>"
            if diff
            else "<p>Identical identities.</p>"
        )
        + "<h2>Per-variant means (delta = B - A)</h2>"
        + table.to_html(na_rep="-", border=0, float_format=lambda x: f"{x:.6f}")
        + "</body></html>\n"
    )


def _cmd_retarget(_args: argparse.Namespace) -> int:
    # not at the top: its import adds 0.7-0.8 s (measured with -X importtime after this
    # module's own imports), which list, show and compare do not need
    from resources.market_data import MarketDataResource

    market = MarketDataResource()
    market.check_config()
    old = recorded_source()
    new = market.home_source()
    write_home_source(new)
    print(f"DAGSTER_HOME {home_dir()}: data source {old} -> {new}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cvn_assets.sweeps", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every sweep of the results store").set_defaults(fn=_cmd_list)
    show = sub.add_parser("show", help="one sweep's identity")
    show.add_argument("sweep_id")
    show.set_defaults(fn=_cmd_show)
    cmp_ = sub.add_parser("compare", help="two sweeps side by side")
    cmp_.add_argument("a")
    cmp_.add_argument("b")
    cmp_.add_argument("--html", action="store_true", help="also write an HTML comparison")
    cmp_.set_defaults(fn=_cmd_compare)
    sub.add_parser(
        "retarget-data-source", help="record the environment's data source as the home's"
    ).set_defaults(fn=_cmd_retarget)
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
