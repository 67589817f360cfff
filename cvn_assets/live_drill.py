"""``make live-drill SCENARIO=crash|calm``: the guard's incident drill under the real daemon.

``python -m cvn_assets.live_drill --scenario crash`` (what ``make live-drill`` calls):

1. a **fresh** home (``--home``, default ``.dagster_home_live_drill_<scenario>``, wiped) whose
   ``dagster.yaml`` queues runs (:func:`instance_yaml`: at most ``--max-runs`` at once, 2 on
   this 2-core machine) and evaluates sensors in threads;
2. the default sweep and the drill's champions exactly as ``make drill``
   (:mod:`cvn_assets.drill_setup`), on the scenario's market; the turn ``T`` lies
   ``--turn-hours`` after the first day past the sweep's window (default: ``make drill``'s
   day 20, see :data:`TURN_HOURS`; the live loop's first run journals those days in one go);
3. ``dagster dev -w workspace.yaml`` (webserver, daemon, code server) on 127.0.0.1 and a free
   port, in its own process group, with the scenario's market in ``$CVN_SYNTHETIC_MARKET``
   and the **accelerated guard clock** (``$CVN_GUARD_CLOCK_*``: market time
   ``T - --lead-hours`` at the daemon's start, one market hour per ``--hour-seconds`` wall
   seconds), the two sensors that are off by default (``expectancy_negative_focal``,
   ``model_drift``) turned on first with ``dagster sensor start``;
4. then it only **watches** (the Dagster instance and the results database; it ticks no
   sensor and launches no run) until the scenario's chain is complete or ``--deadline``
   wall seconds have passed, and stops everything it started by PID (the process group,
   then any descendant left), always.

``crash``: hours journaled by the live loop -> ``expectancy_negative_focal`` P1 twice ->
``rollback_job`` launched by that sensor -> ``CVN_LOSS_FUNCTION = binary:logistic`` -> every
champion back to the baseline -> ``escalate_rollback_job`` (nobody confirms). ``calm``:
``--calm-hours`` market hours journaled with no P1 and no rollback.

The last line is a JSON summary (alerts with their market times, ``rollback_runs``,
``loss_function``, ``champions``, hours journaled per crypto, the daemon's ticks per sensor,
the runs per job and status, the wall times). Exit status 0 when the scenario's checks pass,
1 otherwise, 2 on bad arguments.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cvn_assets.drill_setup import (
    first_day_after_window,
    fresh_home,
    market_config,
    sweep_and_champions,
)
from cvn_assets.guard.clock import (
    CLOCK_ORIGIN_ENV,
    CLOCK_SPEED_ENV,
    CLOCK_START_ENV,
    accelerated_clock,
)
from cvn_assets.live_watch import Watcher, journaled_through, passed_checks
from cvn_assets.market.market_env import SYNTHETIC_MARKET_ENV
from resources.instance_storage import default_instance_yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: the guard's sensors that are STOPPED by default; the live drill turns them on
OFF_BY_DEFAULT = ("expectancy_negative_focal", "model_drift")
#: the turn's default place: 20 days after the first day past the sweep's window, as in
#: ``make drill`` (same market, same champions: the live journal is the replay's). Measured
#: with the turn one day after it instead: the scenario's market then gives 7-11 trades per
#: crypto in the 48 h after the turn (the P1 needs >= 10 on >= 2 cryptos: "insufficient"
#: for a day and a half) and the first P1 came at turn + 80 h; at day 20, at turn + 39 h.
TURN_HOURS = 480
POLL_S = 2.0
#: the signals that stop the drill (and, through its ``finally``, what it started)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", choices=("crash", "calm"), required=True)
    p.add_argument(
        "--home", default=None,
        help="the fresh Dagster home, wiped at the start "
        "(default: ./.dagster_home_live_drill_<scenario>)",
    )  # fmt: skip
    p.add_argument("--edge", type=float, default=4.0, help="the market's drift (as make drill)")
    p.add_argument(
        "--turn-hours", type=int, default=TURN_HOURS,
        help=f"the turn, in hours after the first day past the sweep's window (default "
        f"{TURN_HOURS}: make drill's day 20)",
    )  # fmt: skip
    p.add_argument(
        "--lead-hours", type=int, default=3,
        help="the guard clock starts this many market hours before the turn (default 3)",
    )  # fmt: skip
    p.add_argument(
        "--hour-seconds", type=float, default=5.0,
        help="wall seconds per market hour (default 5: speed 720)",
    )  # fmt: skip
    p.add_argument(
        "--calm-hours", type=int, default=48,
        help="calm: market hours watched from the clock's start (default 48)",
    )  # fmt: skip
    p.add_argument(
        "--deadline", type=float, default=None,
        help="wall seconds the daemon phase may last (default: crash 480, calm the calm "
        "hours x --hour-seconds + 120)",
    )  # fmt: skip
    p.add_argument("--max-runs", type=int, default=2, help="runs at once (default 2)")
    p.add_argument("--port", type=int, default=0, help="the webserver's port (default: free)")
    return p.parse_args(argv)


def _bad_args(a: argparse.Namespace) -> str | None:
    """The first bad argument, named with its value, or None."""
    if a.turn_hours < 0:
        return f"--turn-hours {a.turn_hours}: must be >= 0"
    if a.lead_hours < 1:
        return f"--lead-hours {a.lead_hours}: must be >= 1"
    if not 0.5 <= a.hour_seconds <= 3600:
        return f"--hour-seconds {a.hour_seconds}: must be in [0.5, 3600]"
    if a.calm_hours < 1:
        return f"--calm-hours {a.calm_hours}: must be >= 1"
    if a.deadline is not None and a.deadline <= 0:
        return f"--deadline {a.deadline}: must be > 0"
    if a.max_runs < 1:
        return f"--max-runs {a.max_runs}: must be >= 1"
    if not 0 <= a.port < 65536:
        return f"--port {a.port}: must be in [0, 65535]"
    return None


def instance_yaml(home: Path, max_runs: int) -> str:
    """The live drill's ``dagster.yaml``: the embedded default's storage, runs queued (at
    most ``max_runs`` at once, dequeued every second) and sensors evaluated in threads (a
    slow sensor does not hold up the others' ticks)."""
    cfg = yaml.safe_load(default_instance_yaml(str(home)))
    cfg.pop("concurrency", None)  # replaced by run_queue (Dagster refuses both)
    cfg["run_queue"] = {"max_concurrent_runs": max_runs, "dequeue_interval_seconds": 1}
    cfg["sensors"] = {"use_threads": True, "num_workers": 4}
    head = "# written by `python -m cvn_assets.live_drill` (see its docstring)\n"
    return head + yaml.safe_dump(cfg, sort_keys=False)


def daemon_env(
    base: dict[str, str], market_cfg: dict[str, Any], clock_start: pd.Timestamp, speed: float
) -> dict[str, str]:
    """The environment of ``dagster dev`` and everything it starts: the scenario's market
    and the accelerated clock whose origin is now (``$CVN_GUARD_NOW`` removed: it would fix
    the clock)."""
    env = {k: v for k, v in base.items() if k != "CVN_GUARD_NOW"}
    env.update(
        {
            SYNTHETIC_MARKET_ENV: json.dumps(market_cfg),
            CLOCK_START_ENV: clock_start.isoformat(),
            CLOCK_ORIGIN_ENV: datetime.now(UTC).isoformat(),
            CLOCK_SPEED_ENV: repr(float(speed)),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), base.get("PYTHONPATH")])),
        }
    )
    accelerated_clock(env)  # a bad setting fails here, not in the daemon
    return env


def _reset_signals() -> None:
    """A child of a script may inherit SIGINT/SIGTERM ignored; ``dagster dev`` would then
    ignore being stopped. Restore the defaults before exec."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sensors(env: dict[str, str], names: Sequence[str]) -> None:
    """``dagster sensor start <name> -w workspace.yaml`` for each, in parallel; RuntimeError
    with the CLI's output when one fails."""
    procs = [
        subprocess.Popen(
            [str(BIN / "dagster"), "sensor", "start", name, "-w", "workspace.yaml"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_reset_signals,
        )  # fmt: skip
        for name in names
    ]
    for name, proc in zip(names, procs, strict=True):
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"dagster sensor start {name} failed:\n{out[-3000:]}")


def _children() -> dict[int, list[int]]:
    """Parent PID -> child PIDs of every process (from /proc)."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (not ``pid`` itself)."""
    tree, out, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc/<pid>/stat field
    22), None when it is gone or a zombie: with the PID it names one process, never a
    later process that reused the PID."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _alive(pid: int, started: int) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs."""
    return _start_time(pid) == started


class DagsterDev:
    """``dagster dev`` in its own process group; :meth:`stop` ends the group and any
    descendant that left it, by PID, and returns the PIDs still alive (none expected)."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.log_path, self.port = log_path, port
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1",
             "-p", str(port)],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_reset_signals,
        )  # fmt: skip
        self.seen: dict[int, int] = {}  # PID -> start time

    def note_descendants(self) -> None:
        """Remember the descendants alive now (a run's worker may leave the group), each
        with its start time (a PID reused later by another process is never signalled)."""
        if self.proc.poll() is None:
            for pid in descendants(self.proc.pid) - set(self.seen):
                started = _start_time(pid)
                if started is not None:
                    self.seen[pid] = started

    def stop(self) -> list[int]:
        self.note_descendants()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass

        def left() -> list[int]:
            return sorted(p for p, started in self.seen.items() if _alive(p, started))

        deadline = time.monotonic() + 15
        while left() and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
        self.log.close()
        return left()

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _watch(
    watcher: Watcher, dev: DagsterDev, scenario: str, deadline: float, calm_end: pd.Timestamp
) -> str:
    """Poll until the chain is complete (crash), the calm window is journaled (calm), the
    deadline passes or ``dagster dev`` exits; returns why it stopped."""
    while True:
        state = watcher.poll()
        dev.note_descendants()
        line = watcher.progress_line(state)
        if line:
            print(line, flush=True)
        if scenario == "crash" and watcher.chain_complete(state):
            return "chain complete"
        if scenario == "calm" and journaled_through(state, calm_end):
            return "calm window journaled"
        if dev.proc.poll() is not None:
            return f"dagster dev exited with status {dev.proc.returncode}"
        if time.monotonic() > deadline:
            return "deadline passed"
        time.sleep(POLL_S)


@dataclass(frozen=True)
class Plan:
    """A live drill's times: the first journaled day, the turn, the clock's start and
    speed, the calm window's end and the watch's deadline (wall seconds)."""

    scenario: str
    first_day: pd.Timestamp
    turn: pd.Timestamp
    clock_start: pd.Timestamp
    speed: float
    calm_end: pd.Timestamp
    deadline_s: float
    market_cfg: dict[str, Any]

    @classmethod
    def of(cls, a: argparse.Namespace) -> "Plan":
        first_day = first_day_after_window()
        turn = first_day + pd.Timedelta(hours=a.turn_hours)
        start = turn - pd.Timedelta(hours=a.lead_hours)
        deadline = a.deadline or (
            480.0 if a.scenario == "crash" else a.calm_hours * a.hour_seconds + 120.0
        )
        return cls(
            a.scenario, first_day, turn, start, 3600.0 / a.hour_seconds,
            start + pd.Timedelta(hours=a.calm_hours), deadline,
            market_config(a.scenario, turn, a.edge),
        )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    bad = _bad_args(args)
    if bad:
        print(bad, file=sys.stderr)
        return 2
    t0 = time.monotonic()
    plan = Plan.of(args)
    home = fresh_home(args.home, f".dagster_home_live_drill_{args.scenario}")
    (home / "dagster.yaml").write_text(instance_yaml(home, args.max_runs))
    os.environ.pop("CVN_GUARD_NOW", None)
    os.environ[SYNTHETIC_MARKET_ENV] = json.dumps(plan.market_cfg)
    prep = sweep_and_champions(plan.market_cfg, plan.first_day)
    if isinstance(prep, int):
        return prep
    t_setup = time.monotonic() - t0
    summary = run_daemon(plan, home, prep.cryptos, prep.baseline, args.port)
    summary["seconds"] |= {"setup": round(t_setup, 1), "total": round(time.monotonic() - t0, 1)}
    print(json.dumps(summary, default=str))
    return 0 if all(summary["checks"].values()) and not summary["left_running"] else 1


def run_daemon(
    plan: Plan, home: Path, cryptos: list[str], baseline: str, port: int = 0
) -> dict[str, Any]:
    """Steps 3 and 4 on a home with the sweep and the champions: the sensors on, ``dagster
    dev`` started, watched, stopped (always, by PID); the summary with its ``checks``."""
    t_daemon = time.monotonic()
    env = daemon_env(dict(os.environ), plan.market_cfg, plan.clock_start, plan.speed)
    start_sensors(env, OFF_BY_DEFAULT)
    env = daemon_env(dict(os.environ), plan.market_cfg, plan.clock_start, plan.speed)
    port = port or _free_port()
    watcher = Watcher(home, cryptos, baseline, plan.first_day, accelerated_clock(env))
    print(
        f"dagster dev on http://127.0.0.1:{port} (log {home / 'dagster_dev.log'}); guard "
        f"clock {plan.clock_start.isoformat()} at {plan.speed:g}x; turn {plan.turn.isoformat()}",
        flush=True,
    )
    dev: DagsterDev | None = None
    previous = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
    try:
        dev = DagsterDev(env, port, home / "dagster_dev.log")
        print(f"dagster dev: process group {dev.proc.pid} (stopped by this command)", flush=True)
        why = _watch(watcher, dev, plan.scenario, t_daemon + plan.deadline_s, plan.calm_end)
    except KeyboardInterrupt as exc:
        why = f"interrupted ({exc})"
    finally:
        in_flight = watcher.mark_stop()  # the runs the stop will end (not failures)
        left = dev.stop() if dev is not None else []
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    state = watcher.poll()
    summary = watcher.summary(state, plan.scenario, plan.turn, ended_by_stop=in_flight)
    summary["stopped"], summary["left_running"] = why, left
    summary["clock"] = {"start": plan.clock_start.isoformat(), "speed": plan.speed}
    if plan.scenario == "calm":
        summary["calm_end"] = plan.calm_end.isoformat()
    summary["checks"] = passed_checks(
        plan.scenario, state, summary, plan.turn, baseline, plan.calm_end
    )
    summary["seconds"] = {"daemon": round(time.monotonic() - t_daemon, 1)}
    if dev is not None and "dagster dev exited" in why:
        print(dev.tail(), file=sys.stderr)
    return summary


if __name__ == "__main__":
    sys.exit(main())
