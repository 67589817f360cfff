"""Is the one command's ETA right? Its prediction after 20 % of the cells against the time the
sweep actually took from there, idle and beside competing busy processes.

    python bench/bench_eta.py [--loads 0,2] [--universe BTCUSDC,ETHUSDC] [--share 0.2]

Runs ``python -m cvn_assets.sweep`` (progress lines on) into a fresh ``DAGSTER_HOME`` per load
level, time-stamps every line as it arrives, and reads two ETAs: the one printed with the
first trained cell at or past ``share`` of the cells (``[ 25/125] ...``; before the first
calibrated step it is a lower bound, printed ``ETA >``), and the first full estimate there
(with the default grid: the line of the first variant's calibrated step, right after). Each is
compared with the actual remaining time (from that line to the command's exit, results stage
included):
``ETA / actual`` -- target within 25 % (0.75-1.25).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench_load import sweep_env, with_load  # same folder: python bench/bench_eta.py

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\[\s*(\d+)/(\d+)\].*ETA(>?)\s*([\d.]+|nan)s")
TARGET = 0.25


def timed_sweep(universe: str | None) -> tuple[list[tuple[float, str]], float]:
    """The sweep's stdout lines with their arrival times, and the exit time."""
    with tempfile.TemporaryDirectory() as home:
        env = sweep_env(home, {}, universe)
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "cvn_assets.sweep"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        lines = [(time.perf_counter(), line.rstrip()) for line in proc.stdout]
        rc = proc.wait()
        end = time.perf_counter()
    if rc != 0:
        raise SystemExit(f"sweep exited {rc}:\n" + "\n".join(x for _, x in lines[-20:]))
    return lines, end


def eta_points(
    lines: list[tuple[float, str]], end: float, share: float
) -> dict[str, tuple[float, float]]:
    """``{"lower bound": (eta, actual), "estimate": (eta, actual)}``: the first ETA printed at
    or past ``share`` of the cells, and the first full estimate there (an ETA marked ``>`` is
    the lower bound the one command prints before its first calibrated step)."""
    out: dict[str, tuple[float, float]] = {}
    for t, text in lines:
        m = LINE.match(text)
        if not m or int(m.group(1)) < share * int(m.group(2)):
            continue
        kind = "lower bound" if m.group(3) else "estimate"
        out.setdefault(kind, (float(m.group(4)), end - t))
        if "estimate" in out:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", default="0,2", help="busy competing processes per run")
    ap.add_argument("--universe", default=None, help="comma-separated cryptos (CVN_UNIVERSE)")
    ap.add_argument("--share", type=float, default=0.2, help="share of cells done (0-1)")
    args = ap.parse_args()
    print(f"cores {os.cpu_count()}  universe {args.universe or '(default)'}  share {args.share}")
    for load in (int(x) for x in args.loads.split(",")):
        lines, end = with_load(load, partial(timed_sweep, args.universe))
        total = end - lines[0][0]
        for kind, (eta, actual) in eta_points(lines, end, args.share).items():
            ratio = eta / actual
            ok = "ok" if abs(ratio - 1) <= TARGET else "MISSED"
            if kind == "lower bound":
                ok = "a bound: ok" if ratio <= 1 + TARGET else "MISSED"
            print(
                f"load {load}: sweep {total:6.1f} s; ETA ({kind:<11}) {eta:6.1f} s, "
                f"actual {actual:6.1f} s: {ratio:4.2f}x ({ok}, target 1 +- {TARGET})",
                flush=True,
            )


if __name__ == "__main__":
    main()
