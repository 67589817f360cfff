"""The one command: run the whole FTF sweep into a persistent local Dagster instance.

``python -m cvn_assets.sweep`` (what ``make sweep`` calls) launches, through the real Dagster
instance in ``$DAGSTER_HOME`` (default ``./.dagster_home``), one ranged single run per stage:

1. ``market_job`` over the crypto partitions (candles -> features, labels -> fold plans);
2. ``train_<variant>_job`` per variant over the crypto x fold partitions (model + calibrated
   model), tagged ``cvn/variant`` and ``cvn/loss_function``;
3. ``results_job``: ``finetune_results`` (fan-in, blocking completeness check) -> ``gate_verdicts``.

Before any work it checks the settings, the home's data source and the sweep id's identity
(:mod:`cvn_assets.ablation.identity`; a sweep id registered with other settings is refused, naming
what changed). Only cells whose model and calibrated value with *this sweep's* fingerprint are not
the latest materialization are launched, cut into exact crypto-range x fold-range rectangles
(how Dagster reads a key range of a multi-partitioned asset); stored values with the same
fingerprint are reused, so a re-run after a failure or ``kill -9`` finishes exactly what is
missing. Afterwards it checks that every intended cell exists and names those that do not
(exit status 1). Runs are executed in process (``in_process_executor``), which keeps the
orchestration overhead near 0.03 s per partition; afterwards ``dagster dev -w workspace.yaml``
shows every run, materialization, check and metadata entry.

With ``CVN_EXECUTOR=celery`` (:mod:`cvn_assets.execution.executors`) the training runs are launched
through the instance instead (``execute_job``: their Celery executor sends one task per cell to
the workers) and the progress lines are read from each run's event log; a Celery sweep without
a shared ``CVN_STORE_DIR``, a PostgreSQL results store and Dagster instance, the broker settings
or a live worker is refused before any work (exit status 2), naming what to set.
"""

import argparse
import difflib
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from cvn_assets.ablation.evaluation import variant_summary
from cvn_assets.ablation.gates import gate_verdicts_markdown
from cvn_assets.execution import executors
from cvn_assets.execution.cell_ranges import cover_with_rectangles
from cvn_assets.settings import SettingsError
from resources.home_source import HomeDataSourceConflict, ensure_home_source, write_home_source
from resources.instance_storage import default_instance_yaml
from resources.market_data import MarketDataResource
from resources.model_store import ArtifactStore, CvnIOManager
from resources.results_store import ResultsStore, SweepIdentityConflict
from resources.sweep_settings import SweepProgress, SweepSettings, progress_actions, reset_progress

# Not imported here: cvn_assets.definitions, cvn_assets.partitions and the asset modules
# (assets._util, assets.training, assets.results). Importing them loads and validates every
# CVN_* variable, and a bad one must end the command in one line with exit status 2 (main
# reports it), not as a traceback when this module is imported (drill and paper_run import it
# too). They are imported inside main and the helpers that run after it has loaded them.


def _ensure_home(write_default: bool = True) -> Path:
    """``$DAGSTER_HOME`` (default ``./.dagster_home``), created; with ``write_default`` its
    ``dagster.yaml`` is written when absent (the embedded default's SQLite instance)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path.cwd() / ".dagster_home")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    cfg = Path(home) / "dagster.yaml"
    if write_default and not cfg.exists():
        cfg.write_text(default_instance_yaml(str(Path(home).resolve())))
    return Path(home)


def _range_tags(start: str, end: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}


#: run tags by which the one command finds its own runs after a crash
LAUNCHER_TAGS = ("cvn/launcher_host", "cvn/launcher_pid")


def _launcher_tags() -> dict[str, str]:
    return {LAUNCHER_TAGS[0]: socket.gethostname(), LAUNCHER_TAGS[1]: str(os.getpid())}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_runs(instance: Any) -> list[str]:
    """Mark as failed the runs of earlier one-command processes on this host that died
    (``kill -9``, OOM) and left them STARTED; returns their run ids."""
    host = socket.gethostname()
    reaped = []
    active = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED]
    for run in instance.get_runs(filters=RunsFilter(statuses=active)):
        tags = run.tags
        if tags.get(LAUNCHER_TAGS[0]) != host or not tags.get(LAUNCHER_TAGS[1], "").isdigit():
            continue
        pid = int(tags[LAUNCHER_TAGS[1]])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        instance.report_run_failed(
            run, message=f"the one command that ran it (pid {pid} on {host}) is gone"
        )
        reaped.append(run.run_id)
    return reaped


def results_current(instance: Any, store: Any, sweep_id: str, identity: Any) -> bool:
    """The latest ``gate_verdicts`` materialization is of this sweep id and identity, nothing
    upstream (a calibrated cell, ``finetune_results``) was materialized after it, and its
    verdict rows are in the results store: re-running the fan-in would change nothing."""
    from cvn_assets.partitions import SETTINGS  # loads CVN_* (see the note on the imports)

    ev = instance.get_latest_materialization_event(AssetKey("gate_verdicts"))
    if ev is None or ev.asset_materialization is None:
        return False
    md = ev.asset_materialization.metadata
    same = (
        getattr(md.get("sweep_id"), "value", None) == sweep_id
        and getattr(md.get("sweep_fingerprint"), "value", None) == identity.fingerprint
    )
    upstream = ["finetune_results", *(f"calibrated_{v.name}" for v in SETTINGS.variants)]
    for name in upstream:
        up = instance.get_latest_materialization_event(AssetKey(name))
        if up is not None and up.timestamp > ev.timestamp:
            return False
    return same and not store.load_verdicts(sweep_id).empty


def _refuse(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _one_line(exc: Exception) -> str:
    """A validation error in one line naming the field and the value (pydantic's errors
    otherwise span several lines and a URL)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            parts = [
                f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('input')!r} {e.get('msg')}"
                for e in errors()
            ]
            return "; ".join(parts)
        except Exception:  # not a pydantic error after all
            pass
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known: {sorted(choices)}"


def missing_cells(
    artifacts: Any, identity: Any, variant: Any, cryptos: Sequence[str], n_folds: int
) -> set[tuple[str, str]]:
    """Cells of ``variant`` whose model or calibrated value with this sweep's fingerprint is
    not the partition's latest materialization (so Dagster and the store agree on them)."""
    # these load CVN_* when imported (see the note on the imports)
    from cvn_assets.assets.training import calibrated_asset_name, model_asset_name
    from cvn_assets.partitions import cell_key

    todo: set[tuple[str, str]] = set()
    for crypto in cryptos:
        for fold in range(n_folds):
            key = cell_key(crypto, fold)
            wanted = {
                model_asset_name(variant): identity.model_fingerprint(crypto, fold, variant.name),
                calibrated_asset_name(variant): identity.calibrated_fingerprint(
                    crypto, fold, variant.name
                ),
            }
            ok = all(
                artifacts.current_fingerprint(asset, key) == fp and artifacts.has(asset, key, fp)
                for asset, fp in wanted.items()
            )
            if not ok:
                todo.add((crypto, f"f{fold}"))
    return todo


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep-id", default="default", help="results-store key of this sweep")
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-materialize every cell and retrain every model, even those stored with this "
        "sweep's fingerprint",
    )
    parser.add_argument(
        "--replace-sweep",
        action="store_true",
        help="re-register --sweep-id under this run's identity (drops the old sweep's rows) "
        "instead of refusing an id registered with other settings",
    )
    parser.add_argument(
        "--retarget-data-source",
        action="store_true",
        help="record this run's data source as the home's (the home was made on another one)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-training progress lines")
    parser.add_argument(
        "--resource-config",
        default="{}",
        help='JSON run config per resource, e.g. \'{"sweep": {"num_boost_round": 100}, '
        '"market_data": {"hours": 8760}}\'',
    )
    return parser.parse_args(argv)


#: the resources ``--resource-config`` may configure, by run-config name
_RESOURCE_CLASSES: dict[str, Any] = {
    "sweep": SweepSettings,
    "market_data": MarketDataResource,
    "results_store": ResultsStore,
    "artifacts": ArtifactStore,
    "io_manager": CvnIOManager,
    "progress": SweepProgress,
}


def _resource_config(raw: str) -> dict[str, dict[str, Any]] | str:
    """``--resource-config`` as ``{resource: {setting: value}}``, or the refusal naming the
    unknown resource or setting (with the closest known name)."""
    try:
        extra = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"invalid --resource-config: not valid JSON ({exc.msg})"
    if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
        return "invalid --resource-config: expected a JSON object of objects per resource"
    for name, cfg in extra.items():
        if name not in _RESOURCE_CLASSES:
            return (
                f"invalid --resource-config: unknown resource {name!r}"
                f"{_did_you_mean(name, _RESOURCE_CLASSES)}"
            )
        fields = _RESOURCE_CLASSES[name].model_fields
        for key in cfg:
            if key not in fields:
                return (
                    f"invalid --resource-config: {name} has no setting {key!r}"
                    f"{_did_you_mean(key, fields)}"
                )
    return extra


@dataclass
class _Sweep:
    """What the stages share: the command's choices, the checked resources, the instance and
    the failed runs so far."""

    args: argparse.Namespace
    mode: str
    home: Path
    defs: Any
    settings: Any
    extra: dict[str, dict[str, Any]]
    sweep_cfg: dict[str, Any]
    sweep: SweepSettings
    store: ResultsStore
    artifacts: ArtifactStore
    identity: Any
    status: str
    instance: Any = None
    failures: list[str] = field(default_factory=list)
    cells: "_CeleryProgress" = field(default_factory=lambda: _CeleryProgress())

    @property
    def celery(self) -> bool:
        return self.mode == "celery"

    @property
    def cryptos(self) -> list[str]:
        return list(self.settings.universe)

    def run(self, job_name: str, total: int = 0, **kwargs: Any) -> bool:
        """One ranged run of ``job_name``, in process or (a training job on Celery) through
        the instance; a failure is recorded and reported, and the sweep goes on."""
        run_config: dict[str, Any] = {
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            "resources": {
                **{name: {"config": cfg} for name, cfg in self.extra.items()},
                "sweep": {"config": self.sweep_cfg},
                "progress": {
                    "config": {
                        "echo": not self.args.quiet,
                        "log": True,
                        "total": total,
                        "results_stage": total > 0,
                    }
                },
            },
        }
        job = self.defs.resolve_job_def(job_name)
        tags = {**_launcher_tags(), **kwargs.pop("tags", {})}
        if self.celery and job_name.startswith("train_"):
            # through the instance, so the job's Celery executor runs it: one task per cell
            self.cells.total = total
            success, run_id = executors.execute_on_celery(
                job_name, self.instance, run_config, tags, self.cells.tick
            )
        else:
            result = job.execute_in_process(
                run_config=run_config,
                instance=self.instance,
                raise_on_error=False,
                tags=tags,
                **kwargs,
            )
            success, run_id = result.success, result.run_id
        if not success:
            self.failures.append(f"{job_name} {kwargs} (run {run_id})")
            print(f"!! {job_name} failed (run {run_id}); continuing", file=sys.stderr)
        return success


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        mode = executors.executor_mode()
    except SettingsError as exc:
        return _refuse(f"invalid environment: {exc}")
    # a Celery sweep never gets the embedded default's SQLite instance written for it
    home = _ensure_home(write_default=mode != "celery")
    try:  # the definitions validate every CVN_* variable when they load
        from cvn_assets.definitions import SETTINGS, defs
    except SettingsError as exc:
        return _refuse(f"invalid environment: {exc}")
    if mode == "celery":  # steps run on other hosts: nothing may be local to this one
        # no dagster.yaml: not opened (Dagster would create a SQLite instance there)
        opened = DagsterInstance.get() if (home / "dagster.yaml").exists() else None
        refusal = _celery_preflight(opened)
        if refusal:
            return _refuse(refusal)
    s = _preflight(args, mode, home, defs, SETTINGS)
    if isinstance(s, int):
        return s
    s.instance = DagsterInstance.get()
    reaped = reap_dead_runs(s.instance)
    if reaped:
        print(f"marked {len(reaped)} run(s) of a dead earlier sweep as failed: {reaped}")
    t_start = time.perf_counter()
    s.cells = _CeleryProgress(quiet=args.quiet)
    _print_header(s)
    market_todo = _market_stage(s)
    if s.failures:
        print("STOPPED: the market stage failed:\n  " + "\n  ".join(s.failures), file=sys.stderr)
        return 1
    total = _models_stage(s)
    _results_stage(s, stale=bool(market_todo) or total > 0)
    return _verdict(s, t_start)


def _preflight(
    args: argparse.Namespace, mode: str, home: Path, defs: Any, settings: Any
) -> "_Sweep | int":
    """Every check before any work: the resource config, the settings, the data source of
    the home, the sweep's identity (registered, or refused when the id has another). Returns
    the checked sweep, or the exit status (2) after one line on stderr."""
    from cvn_assets.assets._util import sweep_identity  # loaded by main (see the imports)

    extra = _resource_config(args.resource_config)
    if isinstance(extra, str):
        return _refuse(extra)
    sweep_cfg = {
        **extra.pop("sweep", {}),
        "sweep_id": args.sweep_id,
        "replace_sweep": args.replace_sweep,
        "retrain": args.force,
    }
    try:
        sweep = SweepSettings(**sweep_cfg)
        sweep.validate_all()
        market = MarketDataResource(**extra.get("market_data", {}))
        store = ResultsStore(**extra.get("results_store", {}))
        artifacts = ArtifactStore(**extra.get("artifacts", {}))
        if args.retarget_data_source:
            write_home_source(market.home_source())
        ensure_home_source(market.home_source())
        identity = sweep_identity(sweep, market)
        status = store.register_sweep(sweep.sweep_id, identity, replace=args.replace_sweep)
    except (HomeDataSourceConflict, SweepIdentityConflict) as exc:
        return _refuse(f"refused: {exc}")
    except Exception as exc:  # a bad setting: named by the validators
        return _refuse(f"invalid configuration: {_one_line(exc)}")
    return _Sweep(
        args,
        mode,
        home,
        defs,
        settings,
        extra,
        sweep_cfg,
        sweep,
        store,
        artifacts,
        identity,
        status,
    )


def _print_header(s: _Sweep) -> None:
    settings, identity = s.settings, s.identity
    print(
        f"DAGSTER_HOME={s.home}  universe={','.join(settings.universe)}  folds={settings.n_folds}"
        f"  variants={','.join(v.name for v in settings.variants)}  executor={s.mode}"
    )
    print(
        f"sweep {s.sweep.sweep_id!r}: identity {identity.fingerprint} ({s.status}); data "
        f"{identity.data['source']}; xgboost {identity.code['xgboost']}"
    )


def _market_stage(s: _Sweep) -> list[str]:
    """One run per crypto (each candles materialization carries its own data version); a
    crypto is done when its dataset and fold plans are this sweep's. Returns the cryptos run."""
    market_todo = [
        c
        for c in s.cryptos
        if s.args.force
        or any(
            s.artifacts.current_fingerprint(a, c) != s.identity.market_fingerprint(c)
            for a in ("model_dataset", "fold_splits")
        )
    ]
    t0 = time.perf_counter()
    for c in market_todo:
        s.run("market_job", partition_key=c)
    print(f"market stage: {len(market_todo)} crypto partitions in {time.perf_counter() - t0:.1f}s")
    return market_todo


def _models_stage(s: _Sweep) -> int:
    """Models + calibration: per variant, the missing cells cut into exact rectangles (Dagster
    reads a key range of crypto x fold as crypto-range x fold-range). Returns the cell count."""
    settings = s.settings
    todo = {
        v.name: (
            {(c, f) for c in s.cryptos for f in settings.fold_keys}
            if s.args.force
            else missing_cells(s.artifacts, s.identity, v, s.cryptos, settings.n_folds)
        )
        for v in settings.variants
    }
    total = sum(len(cells) for cells in todo.values())
    reset_progress()
    t0 = s.cells.start = time.perf_counter()
    # the focal variants first (custom objective: the costliest cells), the cross-entropy ones
    # after: the ETA rates the rest by the cells measured so far, so cheaper cells first made
    # it promise too little (bench/bench_eta.py: 0.73x of the actual remaining time idle)
    for v in sorted(settings.variants, key=lambda v: not v.is_focal):
        for rect in cover_with_rectangles(s.cryptos, settings.fold_keys, todo[v.name]):
            s.run(f"train_{v.name}_job", total=total, tags=_range_tags(rect.start, rect.end))
    done = s.cells.actions if s.celery else progress_actions()
    print(
        f"models stage: {total} cells to do; {done.get('trained', 0)} trained, "
        f"{done.get('reused', 0)} reused, {sum(done.values())} done in "
        f"{time.perf_counter() - t0:.1f}s"
    )
    return total


def _results_stage(s: _Sweep, *, stale: bool) -> None:
    """Fan-in and gates, unless the latest ``gate_verdicts`` already is this sweep's, with
    this identity, and nothing was (re-)materialized before it (``stale``: this command ran a
    market or training cell)."""
    t0 = time.perf_counter()
    if s.failures:
        print("results stage skipped: a training run failed", file=sys.stderr)
    elif not stale and results_current(s.instance, s.store, s.sweep.sweep_id, s.identity):
        print(f"results stage: up to date for identity {s.identity.fingerprint} (not re-run)")
    else:
        s.run("results_job")
        print(f"results stage in {time.perf_counter() - t0:.1f}s")


def _verdict(s: _Sweep, t_start: float) -> int:
    """Every intended cell must now exist with this sweep's fingerprint, and every row in
    ``finetune_results``: the summary, then 0, or 1 naming what is missing or failed."""
    settings, sweep_id = s.settings, s.sweep.sweep_id
    still = {
        v.name: missing_cells(s.artifacts, s.identity, v, s.cryptos, settings.n_folds)
        for v in settings.variants
    }
    absent = sorted(f"{v} {c}|{f}" for v, cells in still.items() for c, f in cells)
    rows = s.store.load_results(sweep_id)
    want_rows = len(s.cryptos) * settings.n_folds * len(settings.variants)

    _print_summary(s.store, sweep_id)
    print(f"sweep wall time {time.perf_counter() - t_start:.1f}s")
    if s.failures:
        print("FAILED runs:\n  " + "\n  ".join(s.failures), file=sys.stderr)
    if absent:
        print(
            f"INCOMPLETE: {len(absent)} cells are not materialized with this sweep's settings: "
            + ", ".join(absent),
            file=sys.stderr,
        )
    elif len(rows) != want_rows:
        print(
            f"INCOMPLETE: finetune_results has {len(rows)} rows for sweep "
            f"{sweep_id!r}, expected {want_rows}",
            file=sys.stderr,
        )
    return 1 if (s.failures or absent or len(rows) != want_rows) else 0


def _celery_preflight(instance: Any | None) -> str | None:
    """CVN_EXECUTOR=celery: the shared state (broker, store, results store, PostgreSQL
    instance) is configured and at least one worker answers; else the refusal, naming what to
    set or start."""
    refusal = executors.celery_refusal(instance)
    if refusal:
        return refusal
    # kombu comes with celery, an optional extra: imported only for a Celery sweep
    from kombu.utils.url import maybe_sanitize_url

    broker = maybe_sanitize_url(os.environ[executors.BROKER_ENV])  # the password masked
    try:
        workers = executors.live_workers()
    except Exception as exc:
        return (
            f"refused: the Celery broker {broker} does not answer "
            f"({type(exc).__name__}: {exc}); start it (README: Beyond one machine)"
        )
    if not workers:
        return (
            f"refused: no Celery worker answers on {broker}; start at least one "
            "(dagster-celery worker start -A cvn_assets.execution.celery_worker -y celery.yaml; "
            "README: Beyond one machine). Nothing was done."
        )
    print(f"celery workers: {', '.join(workers)}")
    return None


class _CeleryProgress:
    """k / total with an ETA for cells that finish on Celery workers (read from the event log
    by :func:`cvn_assets.execution.executors.execute_on_celery`); counts trained / reused cells."""

    def __init__(self, quiet: bool = False):
        self.quiet, self.total, self.done = quiet, 0, 0
        self.actions: dict[str, int] = {}
        self.start = time.perf_counter()

    def tick(self, line: str) -> None:
        # "<variant> <key> <trained|reused> <s>s host=<h> pid=<p> f1_buy=<f>"
        parts = line.split()
        action = parts[2] if len(parts) > 2 else "?"
        self.actions[action] = self.actions.get(action, 0) + 1
        self.done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * max(self.total - self.done, 0)
        if not self.quiet:
            print(
                f"[{self.done:>3}/{self.total}] {line}  elapsed {elapsed:6.1f}s  ETA {eta:6.1f}s",
                flush=True,
            )


def _print_summary(store: Any, sweep_id: str) -> None:
    from cvn_assets.assets.results import report_dir  # loads CVN_* (see the note on the imports)

    frame = store.load_results(sweep_id)
    if frame.empty:
        print("no finetune_results rows")
        return
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(f"\nfinetune_results: {len(frame)} rows (sweep {sweep_id!r}) — per variant:")
        summary = variant_summary(frame)
        print(summary.to_string())
        verdicts = store.load_verdicts(sweep_id)
        if not verdicts.empty:
            print("\ngate verdicts:")
            print(gate_verdicts_markdown(verdicts))
            report = report_dir(sweep_id) / "report.html"
            if report.exists():
                print(f"\nreport: {report}")


if __name__ == "__main__":
    raise SystemExit(main())
