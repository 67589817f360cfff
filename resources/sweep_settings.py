"""Run-time settings of the FTF sweep, validated by the guardrails before any work starts.

Everything here is Dagster run config (editable in the launchpad), so a sweep can be re-run
with another label strategy, embargo, fee or XGBoost parameters without code changes. The
partition-shaping settings (universe, fold count, variant matrix) are definition-time and live
in ``cvn_assets.settings``. ``setup_for_execution`` validates every field and fails the run at
resource initialisation, i.e. before the first candle is loaded, with a message naming the
field and the value.
"""

import re
import time
from dataclasses import dataclass
from typing import Any

from dagster import ConfigurableResource, InitResourceContext

from cvn_assets.ablation.calibration import CALIBRATION_METHODS
from cvn_assets.ablation.guardrails import validate_xgb_params
from cvn_assets.market.labels import LabelStrategy, parse_label_strategy

_SWEEP_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class SweepConfigError(ValueError):
    """A sweep setting is invalid; the message names the field and the value."""


class SweepSettings(ConfigurableResource):
    """What a sweep run may vary. Defaults reproduce the spec's FTF sweep (section 7)."""

    sweep_id: str = "default"
    label_strategy: str = "SL0.5_TP1_H4"
    embargo_pct: float = 0.005
    early_stopping_frac: float = 0.15
    fee_per_side: float = 0.00075
    primary_calibration: str = "temperature"
    num_boost_round: int = 400
    early_stopping_rounds: int = 40
    max_depth: int = 4
    eta: float = 0.05
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 5.0
    reg_lambda: float = 1.0
    #: XGBoost threads per cell: 1, with the cells spread over the cores (``cell_workers``).
    #: Measured (bench/bench_load.py, README "Threads under load"): a 2-thread team per cell
    #: waits at every parallel region for a thread the scheduler parked when other processes
    #: compete for the cores (spinning: up to 17x the CPU; PASSIVE: the wall time), while one
    #: thread per cell has no team to wait for
    nthread: int = 1
    #: cells a ranged run trains / calibrates at once, in threads (XGBoost and NumPy release
    #: the GIL); 0 = one per core this process may use (``os.sched_getaffinity``), at most
    #: 4. Not part of the identity: every cell is computed alone, whatever runs beside it
    cell_workers: int = 0
    seed: int = 0
    #: train every selected cell again even when a model with exactly this cell's fingerprint
    #: (settings, data, code: cvn_assets.ablation.identity) is stored; the run tag
    #: ``cvn/retrain=true`` does the same from a UI backfill, where run config cannot be set
    retrain: bool = False
    #: re-register ``sweep_id`` under this run's identity, deleting the old sweep's rows,
    #: instead of refusing an id that was registered with other settings
    replace_sweep: bool = False

    def identity_settings(self) -> dict[str, Any]:
        """Every run-time setting that shapes a number (all fields but the control flags)."""
        return {
            k: getattr(self, k)
            for k in type(self).model_fields
            if k not in ("sweep_id", "retrain", "replace_sweep", "cell_workers")
        }

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.validate_all()

    def validate_all(self) -> None:
        if not _SWEEP_ID_RE.match(self.sweep_id):
            raise SweepConfigError(
                f"sweep_id: {self.sweep_id!r} must be 1-64 characters of [A-Za-z0-9_.-]"
            )
        try:
            parse_label_strategy(self.label_strategy)
        except ValueError as exc:
            raise SweepConfigError(f"label_strategy: {exc}") from None
        if not 0.0 <= self.embargo_pct < 0.2:
            raise SweepConfigError(f"embargo_pct: {self.embargo_pct!r} is outside [0, 0.2)")
        if not 0.0 < self.early_stopping_frac < 0.5:
            raise SweepConfigError(
                f"early_stopping_frac: {self.early_stopping_frac!r} is outside (0, 0.5)"
            )
        if not 0.0 <= self.fee_per_side < 0.01:
            raise SweepConfigError(f"fee_per_side: {self.fee_per_side!r} is outside [0, 0.01)")
        if self.primary_calibration not in CALIBRATION_METHODS:
            raise SweepConfigError(
                f"primary_calibration: {self.primary_calibration!r} is not one of "
                f"{list(CALIBRATION_METHODS)}"
            )
        if not 1 <= self.num_boost_round <= 10_000:
            raise SweepConfigError(f"num_boost_round: {self.num_boost_round!r} outside [1, 10000]")
        if not 1 <= self.early_stopping_rounds <= self.num_boost_round:
            raise SweepConfigError(
                f"early_stopping_rounds: {self.early_stopping_rounds!r} outside "
                f"[1, num_boost_round={self.num_boost_round}]"
            )
        if isinstance(self.cell_workers, bool) or not 0 <= self.cell_workers <= 64:
            raise SweepConfigError(
                f"cell_workers: {self.cell_workers!r} outside [0, 64] (0 = one per core)"
            )
        try:
            validate_xgb_params(self.xgb_params())
        except ValueError as exc:
            raise SweepConfigError(str(exc)) from None

    @property
    def label(self) -> LabelStrategy:
        return parse_label_strategy(self.label_strategy)

    def xgb_params(self) -> dict[str, Any]:
        return {
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "nthread": self.nthread,
            "seed": self.seed,
        }


@dataclass
class _Counter:
    """One progress counter: model cells done and the wall seconds they took (between
    ticks, so a step's start-up counts), calibrated cells done and theirs."""

    start: float
    last: float
    done: int = 0
    model_s: float = 0.0
    calibrated: int = 0
    calibrated_s: float = 0.0


def eta_seconds(
    elapsed: float,
    total: int,
    done: int,
    model_s: float,
    calibrated: int,
    calibrated_s: float,
    results_stage: bool = False,
) -> float:
    """Seconds left for ``total`` cells, each trained then calibrated, after ``done`` trained
    ones (``model_s`` seconds of steps) and ``calibrated`` calibrated ones (``calibrated_s``).

    The remaining work is weighed by the measured seconds per trained and per calibrated cell
    (a calibrated cell not yet seen weighs 0), and the time outside the cells (run launches,
    reading inputs) is spread over it pro rata: ``elapsed * remaining work / done work``.
    With ``results_stage`` (the one command) the results stage still to come counts as one more
    calibrated pass over the ``total`` cells: it reads every calibrated cell again for the
    fan-in, the gates and the report (measured on a 50-cell sweep: 13.8 s against 14.0 s for
    the five calibrated steps). NaN before the first trained cell. Units: seconds."""
    if done <= 0 or model_s + calibrated_s <= 0:
        return float("nan")
    per_model = model_s / done
    per_calibrated = calibrated_s / calibrated if calibrated else 0.0
    remaining = max(total - done, 0) * per_model + max(total - calibrated, 0) * per_calibrated
    if results_stage:
        remaining += total * per_calibrated
    return elapsed * remaining / (model_s + calibrated_s)


class SweepProgress(ConfigurableResource):
    """k / total with an ETA, logged per training; echoed to stdout by the one command.

    With ``total`` > 0 (the one command sets it to the sweep's training count) the counter is
    shared by every run in this process, so the sweep shows k / 125 across its per-variant
    runs, and each calibrated step adds a line (its cells count toward the ETA,
    :func:`eta_seconds`); with ``total`` = 0 (UI launches) each step counts its own partitions.
    """

    echo: bool = False
    #: also write each line to the run's event log (UI launches); the one command turns it off
    log: bool = True
    total: int = 0
    #: the ETA includes the results stage that follows the cells (the one command)
    results_stage: bool = False

    def tick(self, context: Any, label: str, step_total: int, action: str = "") -> str:
        """One trained (or reused) model cell: ``[k/total] <label> elapsed ETA``."""
        if action:
            _ACTIONS[action] = _ACTIONS.get(action, 0) + 1
        c = self._counter(context)
        now = time.perf_counter()
        c.done, c.model_s, c.last = c.done + 1, c.model_s + (now - c.last), now
        total = self.total if self.total > 0 else step_total
        return self._emit(context, f"[{c.done:>3}/{total}] {label}", c, total, now)

    def calibrated(self, context: Any, label: str, cells: int, step_total: int) -> str:
        """A calibrated step's ``cells`` done: one line, and their time toward the ETA."""
        c = self._counter(context)
        now = time.perf_counter()
        c.calibrated, c.calibrated_s = c.calibrated + cells, c.calibrated_s + (now - c.last)
        c.last = now
        total = self.total if self.total > 0 else step_total
        return self._emit(context, f"[{c.done:>3}/{total}] {label}", c, total, now)

    def _emit(self, context: Any, head: str, c: _Counter, total: int, now: float) -> str:
        elapsed = now - c.start
        eta = eta_seconds(
            elapsed, total, c.done, c.model_s, c.calibrated, c.calibrated_s, self.results_stage
        )
        # the one command before its first calibrated step: the cells' calibration and the
        # results stage are not measured yet, so the figure is a lower bound ("ETA >...")
        bound = ">" if self.results_stage and c.calibrated == 0 else " "
        msg = f"{head}  elapsed {elapsed:6.1f}s  ETA{bound}{eta:6.1f}s"
        if self.echo:  # the one command: stdout
            print(msg, flush=True)
        if self.log:  # UI / CLI launches: the run's log in the Dagster UI
            context.log.info(msg)
        return msg

    def _counter_key(self, context: Any) -> str:
        """One counter per process for the one command, else one per run step."""
        if self.total > 0:
            return "sweep"
        return f"{context.run.run_id}:{context.op_execution_context.op.name}"

    def _counter(self, context: Any) -> _Counter:
        key = self._counter_key(context)
        if key not in _PROGRESS:
            now = time.perf_counter()
            _PROGRESS[key] = _Counter(start=now, last=now)
        return _PROGRESS[key]

    def start(self, context: Any) -> None:
        """A step begins: its start-up counts toward the cells it computes."""
        c = self._counter(context)
        c.last = time.perf_counter()


def reset_progress() -> None:
    _PROGRESS.clear()
    _ACTIONS.clear()


def progress_actions() -> dict[str, int]:
    """What the cells of this process did so far, e.g. ``{"trained": 120, "reused": 5}``."""
    return dict(_ACTIONS)


_PROGRESS: dict[str, _Counter] = {}
_ACTIONS: dict[str, int] = {}
