"""Prometheus textfile export of one ``monitoring_metrics`` row (spec 6.1).

:func:`write_prom_file` writes ``<directory>/<crypto>.prom`` in the Prometheus text format
with ``prometheus_client`` (a fresh ``CollectorRegistry``, ``Gauge`` s,
``write_to_textfile``, which writes a temporary file beside the target and renames it, so a
scraper never reads half a file). This is node_exporter's textfile-collector convention:
point ``--collector.textfile.directory`` at ``$DAGSTER_HOME/metrics`` (:func:`metrics_dir`).

Metrics (all gauges; the row keys they come from are those of
:class:`cvn_assets.guard.monitoring.MonitoringRow`):

==========================================  ==========================================  =======
metric {labels}                              value                                       unit
==========================================  ==========================================  =======
``cvn_xgboost_training_failed``              failed training runs in the window           runs
  ``{crypto, loss_function, window}``        (``loss_function``: ``binary:logistic``,
                                             ``focal``, ``other``; ``window``: ``1h``,
                                             ``24h``)
``cvn_focal_loss_active{crypto,gamma,alpha}``  1 if the active model uses focal loss, else 0  --
                                             (``gamma``/``alpha`` as ``%g``, ``""`` for the
                                             baseline)
``cvn_buy_proba_quantile{crypto,quantile}``  buy_proba quantile, ``quantile`` in ``0.05``,   prob.
                                             ``0.25``, ``0.5``, ``0.75``, ``0.95``
``cvn_buy_proba_samples{crypto}``            number of buy_proba values                   count
``cvn_buy_proba_psi{crypto}``                PSI against the training deciles              --
``cvn_buy_proba_psi_null_quantile``          no-drift PSI quantile at this sample size:    --
  ``{crypto, quantile="0.95"}``              alarm only above it
``cvn_expectancy_net_realized``              mean net return per trade (0.01 = +1 %)      ratio
  ``{crypto, window}``                       over ``window`` in ``24h``, ``48h``
``cvn_expectancy_trades{crypto,window}``     trades in that window                         count
``cvn_inference_latency_seconds``            inference latency quantile, ``quantile`` in  seconds
  ``{crypto, quantile}``                     ``0.5``, ``0.99`` (the row holds ms)
``cvn_inference_latency_samples{crypto}``    number of latency samples                     count
``cvn_monitoring_as_of_timestamp_seconds``   end of the windows (``as_of_utc``)            Unix s
  ``{crypto}``
==========================================  ==========================================  =======

Conventions: base units (latency in seconds, per the Prometheus naming guide; the row and
the table keep milliseconds); windowed counts are gauges, not counters, so no ``_total``.
Every series carries ``crypto``: node_exporter refuses the same series in two textfiles,
and the training-failure counts (global, repeated in every crypto's row) would otherwise
collide across ``<crypto>.prom`` files -- aggregate them with ``max by (loss_function,
window)``, not ``sum``. A metric whose row value is ``None`` (or NaN: nothing measured, e.g.
no trades in the window) is left out of the file rather than written as 0; its count
metric is always written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from cvn_assets.guard.monitoring import (
    BUY_PROBA_QUANTILES,
    EXPECTANCY_WINDOWS_H,
    FAILURE_WINDOWS_H,
    LATENCY_QUANTILES,
    LOSS_FUNCTION_KEYS,
    MONITORING_COLUMNS,
    OTHER_LOSS_KEY,
    MonitoringRow,
)
from resources.home_source import home_dir

__all__ = ["metrics_dir", "write_prom_file"]

_CRYPTO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_LABEL_FOR_KEY = {key: lf for lf, key in LOSS_FUNCTION_KEYS.items()} | {
    OTHER_LOSS_KEY: OTHER_LOSS_KEY
}


def metrics_dir(dagster_home: str | os.PathLike[str] | None = None) -> Path:
    """``$DAGSTER_HOME/metrics`` (``./.dagster_home/metrics`` when the variable is unset)."""
    return (Path(dagster_home) if dagster_home else home_dir()) / "metrics"


def _value(row: Mapping[str, Any], key: str) -> float | None:
    v = row[key]
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"row[{key!r}] must be a number or None, got {v!r}")
    f = float(v)
    return None if math.isnan(f) else f


def _label_number(row: Mapping[str, Any], key: str) -> str:
    v = _value(row, key)
    return "" if v is None else format(v, "g")


def write_prom_file(
    directory: str | os.PathLike[str], crypto: str, row: Mapping[str, Any] | MonitoringRow
) -> Path:
    """Write ``row`` as ``<directory>/<crypto>.prom`` (atomically) and return its path.

    ``row``: the dict from :func:`cvn_assets.guard.monitoring.metrics_row` (or a
    :class:`~cvn_assets.guard.monitoring.MonitoringRow`); every key of ``MONITORING_COLUMNS`` must
    be present. ``crypto`` must match ``row["crypto"]`` and be a plain name
    (``[A-Za-z0-9][A-Za-z0-9_-]*``, it becomes the file name). ``directory`` is created if
    missing. Raises ``ValueError`` naming the bad crypto, the missing keys or a non-numeric
    value. See the module docstring for the metric names, labels and units.
    """
    data = _checked_row(crypto, row)
    reg = CollectorRegistry()
    # one step per metric family, in the order they appear in the file
    _training_failed(reg, crypto, data)
    _focal_loss_active(reg, crypto, data)
    _buy_proba(reg, crypto, data)
    _expectancy(reg, crypto, data)
    _inference_latency(reg, crypto, data)
    _as_of(reg, crypto, data)
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{crypto}.prom"
    write_to_textfile(str(path), reg)
    return path


def _checked_row(crypto: str, row: Mapping[str, Any] | MonitoringRow) -> Mapping[str, Any]:
    """``row`` as a mapping, after checking ``crypto`` (a plain name, the row's) and that every
    key of ``MONITORING_COLUMNS`` is present (ValueError naming what is wrong)."""
    if not isinstance(crypto, str) or not _CRYPTO_RE.fullmatch(crypto):
        raise ValueError(
            f"crypto must match [A-Za-z0-9][A-Za-z0-9_-]* (it names the file), got {crypto!r}"
        )
    data: Mapping[str, Any] = dataclasses.asdict(row) if isinstance(row, MonitoringRow) else row
    missing = [k for k in MONITORING_COLUMNS if k not in data]
    if missing:
        raise ValueError(f"row is missing key(s) {missing}")
    if data["crypto"] != crypto:
        raise ValueError(f"crypto={crypto!r} but row['crypto']={data['crypto']!r}")
    return data


def _training_failed(reg: CollectorRegistry, crypto: str, data: Mapping[str, Any]) -> None:
    """``cvn_xgboost_training_failed{crypto, loss_function, window}``."""
    failed = Gauge(
        "cvn_xgboost_training_failed",
        "Failed XGBoost training runs (run tag cvn/loss_function) in the window ending at "
        "as_of; global, repeated per crypto.",
        ["crypto", "loss_function", "window"],
        registry=reg,
    )
    for key, lf in _LABEL_FOR_KEY.items():
        for window in FAILURE_WINDOWS_H:
            v = _value(data, f"training_failed_{key}_{window}")
            if v is not None:
                failed.labels(crypto, lf, window).set(v)


def _focal_loss_active(reg: CollectorRegistry, crypto: str, data: Mapping[str, Any]) -> None:
    """``cvn_focal_loss_active{crypto, gamma, alpha}``."""
    active = Gauge(
        "cvn_focal_loss_active",
        "1 if the active model is trained with focal loss (gamma, alpha), else 0.",
        ["crypto", "gamma", "alpha"],
        registry=reg,
    )
    v = _value(data, "focal_loss_active")
    if v is not None:
        active.labels(
            crypto, _label_number(data, "focal_gamma"), _label_number(data, "focal_alpha")
        ).set(v)


def _buy_proba(reg: CollectorRegistry, crypto: str, data: Mapping[str, Any]) -> None:
    """``cvn_buy_proba_quantile``, ``_samples``, ``_psi`` and ``_psi_null_quantile``."""
    quant = Gauge(
        "cvn_buy_proba_quantile",
        "Quantile of buy_proba over the day (numpy linear method).",
        ["crypto", "quantile"],
        registry=reg,
    )
    for suffix, level in BUY_PROBA_QUANTILES.items():
        v = _value(data, f"buy_proba_{suffix}")
        if v is not None:
            quant.labels(crypto, format(level, "g")).set(v)
    Gauge(
        "cvn_buy_proba_samples",
        "Number of buy_proba values behind the quantiles and the PSI.",
        ["crypto"],
        registry=reg,
    ).labels(crypto).set(_value(data, "buy_proba_n") or 0.0)

    v = _value(data, "buy_proba_psi")
    if v is not None:
        Gauge(
            "cvn_buy_proba_psi",
            "PSI of buy_proba against the training deciles (10 bins, shares floored at 1e-4).",
            ["crypto"],
            registry=reg,
        ).labels(crypto).set(v)
    v = _value(data, "buy_proba_psi_null_p95")
    if v is not None:
        Gauge(
            "cvn_buy_proba_psi_null_quantile",
            "PSI quantile under no drift at this sample size (Monte Carlo); alarm above it.",
            ["crypto", "quantile"],
            registry=reg,
        ).labels(crypto, "0.95").set(v)


def _expectancy(reg: CollectorRegistry, crypto: str, data: Mapping[str, Any]) -> None:
    """``cvn_expectancy_net_realized{crypto, window}`` and ``cvn_expectancy_trades``."""
    net = Gauge(
        "cvn_expectancy_net_realized",
        "Mean net realized return per trade (fraction, fees included) over the window.",
        ["crypto", "window"],
        registry=reg,
    )
    trades = Gauge(
        "cvn_expectancy_trades",
        "Trades exiting in the window behind cvn_expectancy_net_realized.",
        ["crypto", "window"],
        registry=reg,
    )
    for window in EXPECTANCY_WINDOWS_H:
        v = _value(data, f"expectancy_net_{window}")
        if v is not None:
            net.labels(crypto, window).set(v)
        trades.labels(crypto, window).set(_value(data, f"expectancy_trades_{window}") or 0.0)


def _inference_latency(reg: CollectorRegistry, crypto: str, data: Mapping[str, Any]) -> None:
    """``cvn_inference_latency_seconds{crypto, quantile}`` (the row holds ms) and
    ``cvn_inference_latency_samples``."""
    lat = Gauge(
        "cvn_inference_latency_seconds",
        "Inference latency quantile over the day, seconds (numpy linear method).",
        ["crypto", "quantile"],
        registry=reg,
    )
    for suffix, level in LATENCY_QUANTILES.items():
        v = _value(data, f"latency_{suffix}_ms")
        if v is not None:
            lat.labels(crypto, format(level, "g")).set(v / 1000.0)
    Gauge(
        "cvn_inference_latency_samples",
        "Number of inference latency samples behind the quantiles.",
        ["crypto"],
        registry=reg,
    ).labels(crypto).set(_value(data, "latency_n") or 0.0)


def _as_of(reg: CollectorRegistry, crypto: str, data: Mapping[str, Any]) -> None:
    """``cvn_monitoring_as_of_timestamp_seconds{crypto}`` from ``as_of_utc`` (ISO-8601 with a
    UTC offset, else ValueError); left out when ``as_of_utc`` is None."""
    as_of = data["as_of_utc"]
    if as_of is None:
        return
    try:
        ts = dt.datetime.fromisoformat(str(as_of))
    except ValueError:
        raise ValueError(f"row['as_of_utc'] is not ISO-8601: {as_of!r}") from None
    if ts.tzinfo is None:
        raise ValueError(f"row['as_of_utc'] must carry a UTC offset, got {as_of!r}")
    Gauge(
        "cvn_monitoring_as_of_timestamp_seconds",
        "End of the monitoring windows of this file, Unix seconds.",
        ["crypto"],
        registry=reg,
    ).labels(crypto).set(ts.timestamp())
