"""What the sweep identity costs the one command: computing it (settings, definition, data
identity with CSV file hashes, code digests) and registering it, against the whole sweep.

    python bench/bench_identity.py [--csv DIR] [--repeat 5]

Prints best-of-``repeat`` seconds for a cold identity (first call in a process: source digests
and file hashes computed) and a warm one (memoized), and the registration round trip on a
temporary SQLite results store.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

USDT_MAP = {
    s: s.replace("USDC", "USDT") for s in ("BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC")
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", help="folder of kline CSVs (hashes every file of the universe)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("DAGSTER_HOME", tempfile.mkdtemp())

    from cvn_assets.ablation import identity as ident
    from cvn_assets.assets._util import sweep_identity
    from resources import market_data as md
    from resources.market_data import MarketDataResource
    from resources.results_store import ResultsStore
    from resources.sweep_settings import SweepSettings

    market = (
        MarketDataResource(source="csv", csv_dir=args.csv, symbol_map=USDT_MAP)
        if args.csv
        else MarketDataResource()
    )
    sweep = SweepSettings()
    cold, warm, reg = [], [], []
    for _ in range(args.repeat):
        ident.source_digests.cache_clear()
        ident.code_versions.cache_clear()
        md._sha256_cached.cache_clear()
        t0 = time.perf_counter()
        identity = sweep_identity(sweep, market)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sweep_identity(sweep, market)
        warm.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as d:
            store = ResultsStore(database_url=f"sqlite:///{d}/r.sqlite")
            store.engine  # noqa: B018 - schema creation is not part of the registration
            t0 = time.perf_counter()
            store.register_sweep("default", identity)
            store.register_sweep("default", identity)
            reg.append(time.perf_counter() - t0)
            store.engine.dispose()
    source = f"csv ({args.csv})" if args.csv else "synthetic"
    print(f"data: {source}; best of {args.repeat}")
    print(f"identity, cold (digests + file hashes): {min(cold) * 1e3:8.1f} ms")
    print(f"identity, warm (memoized):              {min(warm) * 1e3:8.1f} ms")
    print(f"register twice (new + same):            {min(reg) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
