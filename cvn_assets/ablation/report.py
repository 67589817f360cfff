"""Self-contained HTML report of the focal-loss sweep's gate verdicts (spec 7.3-7.5).

The Phase-5 results dossier (spec 7.5) needs the statistical evidence in one file a committee
can open offline: the verdict table, a forest plot of the f1_buy delta CIs, the crypto x fold
heatmap of deltas, reliability diagrams (Guo et al. 2017; Niculescu-Mizil & Caruana 2005) for
the baseline and the best focal variant per calibration method, the PBO logit histogram
(Bailey, Borwein, Lopez de Prado, Zhu 2014, fig. of the lambda distribution) and the per-asset /
per-fold variance tables (F1_BUY_BOOST_PLAN §7).  Images are PNGs embedded as base64 ``data:``
URIs and there is no external URL, script or stylesheet, so the file renders identically in an
air-gapped browser or as a Dagster asset artifact.  Figures are drawn on ``matplotlib.figure
.Figure`` with the Agg canvas (no pyplot global state, safe in a Dagster worker thread).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray

from cvn_assets.ablation.gates import ECE_METHODS, GATE_COLUMNS, fold_tests, per_asset_breakdown

__all__ = ["best_focal_variant", "reliability_bins", "render_report"]

Reliability = Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]

_N_BINS = 15
_DPI = 80
_VERDICT_COLUMNS = ("variant", "is_baseline", "lock", "mean_delta", "ci_lo", "ci_hi")


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _check_verdicts(verdicts: pd.DataFrame) -> str:
    """Return the baseline name after checking ``verdicts`` is evaluate_gates() output."""
    if not isinstance(verdicts, pd.DataFrame):
        raise TypeError(f"verdicts must be a pandas DataFrame; got {type(verdicts).__name__}")
    missing = [c for c in (*_VERDICT_COLUMNS, *GATE_COLUMNS) if c not in verdicts.columns]
    if missing:
        raise ValueError(f"verdicts is missing column(s) {missing}; pass evaluate_gates() output")
    base = verdicts.loc[verdicts["is_baseline"].astype(bool), "variant"]
    if len(base) != 1:
        raise ValueError(f"verdicts must have exactly one is_baseline row; got {list(base)}")
    if len(verdicts) < 2:
        raise ValueError("verdicts has no non-baseline variant")
    return str(base.iloc[0])


def _check_prob_y(prob: Any, y: Any, where: str) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
    p = np.asarray(prob, dtype=float)
    t = np.asarray(y)
    if p.ndim != 1 or t.ndim != 1 or p.size != t.size or p.size == 0:
        raise ValueError(
            f"reliability{where} (prob, y) must be non-empty 1-D arrays of equal length; "
            f"got shapes {p.shape} and {t.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(p) | (p < 0.0) | (p > 1.0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"reliability{where} prob[{i}] must be in [0, 1]; got {p[i]!r}")
    if not np.isin(t, (0, 1)).all():
        i = int(np.flatnonzero(~np.isin(t, (0, 1)))[0])
        raise ValueError(f"reliability{where} y[{i}] must be 0 or 1; got {t[i]!r}")
    return p, t.astype(np.int8)


def _check_reliability(
    reliability: Reliability | None,
) -> dict[str, dict[str, tuple[NDArray[np.float64], NDArray[np.int8]]]]:
    if reliability is None:
        return {}
    if not isinstance(reliability, Mapping):
        raise TypeError(f"reliability must be a mapping; got {type(reliability).__name__}")
    out: dict[str, dict[str, tuple[NDArray[np.float64], NDArray[np.int8]]]] = {}
    for variant, methods in reliability.items():
        if not isinstance(methods, Mapping):
            raise TypeError(f"reliability[{variant!r}] must map method -> (prob, y)")
        out[str(variant)] = {}
        for method, pair in methods.items():
            if method not in ECE_METHODS:
                raise ValueError(
                    f"reliability[{variant!r}] method must be one of {list(ECE_METHODS)}; "
                    f"got {method!r}"
                )
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"reliability[{variant!r}][{method!r}] must be (prob, y)")
            out[str(variant)][method] = _check_prob_y(
                pair[0], pair[1], f"[{variant!r}][{method!r}]"
            )
    return out


def _check_logits(pbo_logits: Any) -> NDArray[np.float64] | None:
    if pbo_logits is None:
        return None
    arr = np.asarray(pbo_logits, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"pbo_logits must be a non-empty 1-D array; got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"pbo_logits[{i}] is not finite: {arr[i]!r}")
    return arr


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def best_focal_variant(verdicts: pd.DataFrame) -> str:
    """The focal variant the report puts next to the baseline: locked first, then best delta.

    Callers use it to decide which variant's test-block probabilities to pass as
    ``reliability`` to :func:`render_report`.
    """
    _check_verdicts(verdicts)
    focal = verdicts[~verdicts["is_baseline"].astype(bool)].copy()
    focal["_lock"] = focal["lock"].fillna(False).astype(bool)
    focal = focal.sort_values(["_lock", "mean_delta"], ascending=[False, False], kind="stable")
    return str(focal["variant"].iloc[0])


def _forest_plot(verdicts: pd.DataFrame) -> str:
    focal = verdicts[~verdicts["is_baseline"].astype(bool)].reset_index(drop=True)
    n = len(focal)
    fig = Figure(figsize=(6.5, 1.2 + 0.45 * n))
    ax = fig.add_subplot()
    ys = np.arange(n)[::-1]
    for y, (_, r) in zip(ys, focal.iterrows(), strict=True):
        color = "tab:green" if bool(r["lock"]) else "tab:red"
        ax.plot([r["ci_lo"], r["ci_hi"]], [y, y], color=color, lw=2)
        ax.plot([r["mean_delta"]], [y], "o", color=color)
    ax.axvline(0.0, color="black", lw=0.8, ls="--")
    ax.set_yticks(ys, [str(v) for v in focal["variant"]])
    ax.set_xlabel("mean f1_buy delta vs baseline (95% paired bootstrap CI)")
    ax.set_title("Forest plot (green = lock)")
    fig.tight_layout()
    return _png(fig)


def _heatmaps(deltas: Mapping[str, pd.DataFrame]) -> str:
    n = len(deltas)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    vmax = max(float(np.abs(d.to_numpy()).max()) for d in deltas.values()) or 1e-9
    fig = Figure(figsize=(5.2 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for k, (ax, (variant, d)) in enumerate(zip(axes.ravel(), deltas.items(), strict=False)):
        values = d.to_numpy(dtype=float)
        im = ax.imshow(values, cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_xticks(range(d.shape[1]), [str(f) for f in d.columns])
        ax.set_yticks(range(d.shape[0]), [str(c) for c in d.index] if k % ncols == 0 else [])
        ax.set_xlabel("fold")
        ax.set_title(f"{variant}: f1_buy delta")
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:+.3f}", ha="center", va="center", fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    return _png(fig)


def reliability_bins(
    prob: ArrayLike, y: ArrayLike, n_bins: int = _N_BINS
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64], float]:
    """Equal-width reliability bins (positive class) and the ECE they imply (Guo et al. 2017).

    Returns mean predicted probability, observed positive rate and count per bin (NaN for
    empty bins) and ``ECE = sum_b n_b / n * |frac_pos_b - mean_pred_b|``.  Bins are
    ``[k/M, (k+1)/M)`` with p = 1 in the last bin.  For display only: the gate figures are the
    ``ece_hold_<method>`` columns computed by the calibration module.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")
    prob, y = _check_prob_y(prob, y, "")
    idx = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=prob, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y.astype(float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.where(counts > 0, sum_p / counts, np.nan)
        frac_pos = np.where(counts > 0, sum_y / counts, np.nan)
    filled = counts > 0
    ece = float(np.sum(counts[filled] / prob.size * np.abs(frac_pos[filled] - mean_pred[filled])))
    return mean_pred, frac_pos, counts.astype(np.int64), ece


def _reliability_figure(
    data: Mapping[str, Mapping[str, tuple[NDArray[np.float64], NDArray[np.int8]]]],
    variants: Sequence[str],
) -> str:
    methods = [m for m in ECE_METHODS if any(m in data[v] for v in variants)]
    fig = Figure(figsize=(2.9 * len(methods), 2.9 * len(variants)))
    axes = fig.subplots(len(variants), len(methods), squeeze=False)
    for i, v in enumerate(variants):
        for j, m in enumerate(methods):
            ax = axes[i, j]
            ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls="--")
            if m not in data[v]:
                ax.set_title(f"{v} / {m}: no data", fontsize=8)
                continue
            mean_pred, frac_pos, counts, ece = reliability_bins(*data[v][m])
            keep = counts > 0
            ax.plot(mean_pred[keep], frac_pos[keep], "o-", ms=3)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_title(f"{v} / {m}\npooled ECE {ece:.3f} (n={int(counts.sum())})", fontsize=8)
            if i == len(variants) - 1:
                ax.set_xlabel("mean predicted P(BUY)", fontsize=8)
            if j == 0:
                ax.set_ylabel("observed BUY rate", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _pbo_histogram(logits: NDArray[np.float64]) -> str:
    pbo = float(np.mean(logits <= 0.0))
    fig = Figure(figsize=(6.0, 3.2))
    ax = fig.add_subplot()
    ax.hist(logits, bins=min(30, max(5, logits.size // 3)), color="tab:blue", alpha=0.8)
    ax.axvline(0.0, color="black", ls="--", lw=0.8)
    ax.set_xlabel("logit of OOS relative rank of the IS-best variant")
    ax.set_ylabel("CSCV splits")
    ax.set_title(f"PBO = share of logits <= 0 = {pbo:.3f} ({logits.size} splits)")
    fig.tight_layout()
    return _png(fig)


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
def _fmt(x: Any, spec: str) -> str:
    if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)


def _gate_cell(text: str, verdict: Any) -> str:
    if verdict is pd.NA or verdict is None:
        return f"<td>{html.escape(text)}</td>"
    cls = "pass" if verdict == "PASS" else "fail"
    return f'<td class="{cls}">{html.escape(text)} {html.escape(str(verdict))}</td>'


def _verdict_table(verdicts: pd.DataFrame) -> str:
    head = (
        "variant",
        "lock",
        "significance: min p_BH fold / p_BH cells",
        "mean delta [95% CI]",
        "Cohen's d_av (d_z)",
        "cryptos improving",
        "delta ECE_HOLD [95% CI] (method)",
        "PBO",
    )
    rows = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)]
    rows.append("</tr></thead><tbody>")
    for _, r in verdicts.iterrows():
        name = html.escape(str(r["variant"]))
        if bool(r["is_baseline"]):
            f1 = _fmt(r.get("f1_buy_mean"), ".4f")
            rows.append(
                f"<tr><td>{name}</td><td>reference</td>"
                f'<td colspan="6">baseline: f1_buy mean {f1}</td></tr>'
            )
            continue
        lock = bool(r["lock"])
        cells = [
            f"<td>{name}</td>",
            f'<td class="{"pass" if lock else "fail"}">{"LOCK" if lock else "no"}</td>',
            _gate_cell(
                f"{_fmt(r.get('p_fold_min_bh'), '.3g')} / {_fmt(r.get('p_cells_bh'), '.3g')}",
                r["gate_significance"],
            ),
            _gate_cell(
                f"{_fmt(r['mean_delta'], '+.4f')} [{_fmt(r['ci_lo'], '+.4f')}, "
                f"{_fmt(r['ci_hi'], '+.4f')}]",
                r["gate_bootstrap_ci"],
            ),
            _gate_cell(
                f"{_fmt(r.get('d_av'), '.2f')} ({_fmt(r.get('d_z'), '.2f')}) "
                f"{r.get('d_magnitude', '')}",
                r["gate_effect_size"],
            ),
            _gate_cell(
                f"{r.get('n_cryptos_improving')}/{r.get('n_cryptos')} "
                f"(need {r.get('n_cryptos_required')})",
                r["gate_per_asset"],
            ),
            _gate_cell(
                f"{_fmt(r.get('ece_delta'), '+.4f')} [{_fmt(r.get('ece_delta_lo'), '+.4f')}, "
                f"{_fmt(r.get('ece_delta_hi'), '+.4f')}] ({r.get('ece_method')})",
                r["gate_ece"],
            ),
            _gate_cell(_fmt(r.get("pbo"), ".3f"), r["gate_pbo"]),
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _ece_methods_table(verdicts: pd.DataFrame) -> str:
    focal = verdicts[~verdicts["is_baseline"].astype(bool)]
    out = pd.DataFrame({"variant": focal["variant"]})
    for m in ECE_METHODS:
        if f"ece_delta_{m}" not in focal.columns:
            continue
        out[m] = [
            f"{_fmt(r[f'ece_delta_{m}'], '+.4f')} [{_fmt(r[f'ece_delta_{m}_lo'], '+.4f')}, "
            f"{_fmt(r[f'ece_delta_{m}_hi'], '+.4f')}] {r[f'ece_pass_{m}']}"
            for _, r in focal.iterrows()
        ]
    return str(out.to_html(index=False, escape=True, border=0))


def _per_asset_table(assets: pd.DataFrame) -> str:
    cell = [
        f"{r.median_delta:+.4f} (var {r.var_delta:.2e}) {'improves' if r.improves else '-'}"
        for r in assets.itertuples()
    ]
    wide = assets.assign(cell=cell).pivot(index="crypto", columns="variant", values="cell")
    return str(wide.to_html(escape=True, border=0))


def _per_fold_table(folds: pd.DataFrame) -> str:
    cell = [
        f"median {r.median_delta:+.4f} / var {r.var_delta:.2e} / p_BH {r.p_bh:.3g}"
        for r in folds.itertuples()
    ]
    wide = folds.assign(cell=cell).pivot(index="fold", columns="variant", values="cell")
    return str(wide.to_html(escape=True, border=0))


def trading_table(results: pd.DataFrame) -> str:
    """Per variant, the net expectancy at the trading threshold (information only: the gates
    stay on f1_buy). Empty string when ``results`` has no trading columns."""
    need = {"expectancy_trading", "n_trades_trading", "expectancy_net", "n_trades"}
    if not need <= set(results.columns):
        return ""
    g = results.groupby("variant", sort=False)
    table = pd.DataFrame(
        {
            "expectancy at f1 threshold (mean per trade)": g["expectancy_net"].mean(),
            "trades at f1 threshold": g["n_trades"].sum(),
            "expectancy at trading threshold (mean per trade)": g["expectancy_trading"].mean(),
            "trades at trading threshold": g["n_trades_trading"].sum(),
            "cells that trade": g["n_trades_trading"].apply(lambda x: int((x > 0).sum())),
        }
    )
    return (
        "<h2>Trading threshold (information; the gates use f1_buy)</h2>"
        '<p class="note">A second threshold per cell, fitted on the calibration block to '
        "maximise the mean net return per trade after fees (at least 30 calibration trades), "
        "or no trading when none is positive; scored once on the test block.</p>"
        + str(table.to_html(escape=True, border=0, float_format=lambda x: f"{x:+.5f}"))
    )


_CSS = """
body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f2f2f2}
td.pass{background:#e3f6e3}
td.fail{background:#fbe3e3}
img{max-width:100%;display:block;margin:0.5em 0 1.5em}
.note{color:#555;font-size:0.9em}
"""


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def identity_header(identity: dict[str, Any] | None, fingerprint: str | None) -> str:
    """HTML block: the sweep's identity fingerprint, data, code and settings (empty if None)."""
    if identity is None:
        return ""
    data = identity.get("data", {})
    if data.get("source") == "csv":
        files = data.get("files", {})
        data_text = "CSV files: " + ", ".join(
            f"{c} {f.get('name')} (sha256 {str(f.get('sha256'))[:12]})" for c, f in files.items()
        )
    else:
        data_text = "synthetic market: " + ", ".join(
            f"{k}={v}" for k, v in data.items() if k != "source"
        )
    rows = [
        ("identity", fingerprint or "?"),
        ("data", data_text),
        ("code", ", ".join(f"{k} {v}" for k, v in identity.get("code", {}).items())),
        ("definition", json.dumps(identity.get("definition", {}), sort_keys=True)),
        ("settings", ", ".join(f"{k}={v}" for k, v in identity.get("settings", {}).items())),
    ]
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f'<h2>Sweep identity</h2><table class="identity">{body}</table>'


def report_figures(
    results: pd.DataFrame,
    verdicts: pd.DataFrame,
    *,
    reliability: Reliability | None = None,
    pbo_logits: np.ndarray | None = None,
    validated: bool = False,
) -> dict[str, str]:
    """The report's plots as base64 PNGs (for the HTML report and Dagster metadata).

    Keys: ``forest_plot`` (mean f1_buy delta with its 95% CI per focal variant),
    ``heatmaps`` (crypto x fold f1_buy delta per focal variant), ``reliability`` (baseline
    and :func:`best_focal_variant`, when ``reliability`` has them) and ``cscv_histogram``
    (when ``pbo_logits`` are given). Inputs are those of :func:`render_report` and validated
    the same way (unless ``validated``).
    """
    if validated:
        baseline = str(verdicts.loc[verdicts["is_baseline"].astype(bool), "variant"].iloc[0])
        rel, logits = reliability or {}, pbo_logits
    else:
        baseline = _check_verdicts(verdicts)
        per_asset_breakdown(results, baseline=baseline)  # validates results
        rel, logits = _check_reliability(reliability), _check_logits(pbo_logits)
    focal_names = [str(v) for v in verdicts.loc[~verdicts["is_baseline"].astype(bool), "variant"]]
    wide = results.pivot_table(index=["crypto", "fold"], columns="variant", values="f1_buy")
    deltas = {
        v: (wide[v] - wide[baseline]).unstack("fold").sort_index(axis=0).sort_index(axis=1)
        for v in focal_names
    }
    out = {"forest_plot": _forest_plot(verdicts), "heatmaps": _heatmaps(deltas)}
    shown = [v for v in (baseline, best_focal_variant(verdicts)) if v in rel]
    if shown:
        out["reliability"] = _reliability_figure(rel, shown)
    if logits is not None:
        out["cscv_histogram"] = _pbo_histogram(logits)
    return out


def render_report(
    results: pd.DataFrame,
    verdicts: pd.DataFrame,
    *,
    reliability: Reliability | None = None,
    pbo_logits: np.ndarray | None = None,
    out_path: Path,
    title: str = "cvn-focal: focal-loss gate report",
    identity: dict[str, Any] | None = None,
    identity_fingerprint: str | None = None,
    figures: dict[str, str] | None = None,
) -> Path:
    """Write the self-contained HTML report to ``out_path`` and return the path.

    ``results`` is ``finetune_results`` and ``verdicts`` the output of
    :func:`cvn_assets.ablation.gates.evaluate_gates` on it.  ``reliability`` maps "baseline" and a
    focal variant name to ``{method: (prob, y)}`` arrays from the test blocks; the diagrams are
    drawn for the baseline and :func:`best_focal_variant` (other keys are ignored, a missing one is
    noted).  ``pbo_logits`` are :func:`cvn_assets.ablation.stats.cscv_logits` of the PBO matrix.
    All inputs are validated before anything is drawn or written.  ``identity`` (the sweep's
    :class:`cvn_assets.ablation.identity.SweepIdentity` as a dict) and its fingerprint, when given,
    are shown in the header: data source, code versions and every setting that made the numbers.
    ``figures``, when given, are :func:`report_figures` of these same inputs, already drawn
    (the caller also needs them, e.g. as Dagster metadata): they are embedded as they are
    instead of being drawn a second time; a missing ``forest_plot`` or ``heatmaps`` key is a
    ValueError.
    """
    baseline, assets, folds = _checked_tables(results, verdicts)
    rel = _check_reliability(reliability)
    logits = _check_logits(pbo_logits)
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"title must be a non-empty string; got {title!r}")
    out = Path(out_path)
    if out.exists() and out.is_dir():
        raise ValueError(f"out_path {str(out)!r} is a directory; give a file name")

    # --- drawing ---
    if figures is None:
        figs = report_figures(results, verdicts, reliability=rel, pbo_logits=logits, validated=True)
    else:
        lacking = sorted({"forest_plot", "heatmaps"} - set(figures))
        if lacking:
            raise ValueError(f"figures lack {lacking}; pass report_figures() of the same inputs")
        figs = figures
    sections = [
        *_head_sections(title, baseline, verdicts, identity, identity_fingerprint, figs),
        *_reliability_sections(baseline, best_focal_variant(verdicts), rel, figs),
        *_pbo_sections(verdicts, figs),
        trading_table(results),
        "<h2>Per-asset breakdown (median delta over folds, variance over folds)</h2>",
        _per_asset_table(assets),
        "<h2>Per-fold tests (median and variance across cryptos, BH-adjusted p)</h2>",
        _per_fold_table(folds),
        "<details><summary>All verdict columns</summary>",
        str(verdicts.to_html(index=False, escape=True, border=0, na_rep="NA")),
        "</details>",
    ]
    doc = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(s for s in sections if s)
        + "\n</body>\n</html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out


def _checked_tables(
    results: pd.DataFrame, verdicts: pd.DataFrame
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """``(baseline, per-asset breakdown, per-fold tests)``; ``ValueError`` when the verdicts
    are malformed, ``results`` invalid, or the two disagree on the focal variants."""
    baseline = _check_verdicts(verdicts)
    assets = per_asset_breakdown(results, baseline=baseline)  # validates results
    folds = fold_tests(results, baseline=baseline)
    focal_names = [str(v) for v in verdicts.loc[~verdicts["is_baseline"].astype(bool), "variant"]]
    missing = sorted(set(focal_names) ^ set(assets["variant"]))
    if missing:
        raise ValueError(f"verdicts and results disagree on variants: {missing}")
    return baseline, assets, folds


def _head_sections(
    title: str,
    baseline: str,
    verdicts: pd.DataFrame,
    identity: dict[str, Any] | None,
    identity_fingerprint: str | None,
    figs: dict[str, str],
) -> list[str]:
    """Title, what is compared, the sweep identity, the verdicts, forest plot and heatmaps."""
    return [
        f"<h1>{html.escape(title)}</h1>",
        '<p class="note">Paired comparison of every focal variant with the '
        f"<b>{html.escape(baseline)}</b> on the same crypto and fold; statistics from "
        "cvn_assets.ablation.gates (BH-FDR, one-sided paired t-tests, percentile bootstrap, "
        "Cohen's d, CSCV PBO).</p>",
        identity_header(identity, identity_fingerprint),
        "<h2>Gate verdicts</h2>",
        _verdict_table(verdicts),
        "<h3>ECE_HOLD difference vs baseline, every calibration method</h3>",
        _ece_methods_table(verdicts),
        "<h2>Forest plot of the f1_buy delta</h2>",
        _img(figs["forest_plot"], "forest plot of mean f1_buy delta with 95% CI"),
        "<h2>Crypto x fold f1_buy delta</h2>",
        _img(figs["heatmaps"], "heatmap of f1_buy delta per crypto and fold"),
    ]


def _reliability_sections(
    baseline: str, best: str, rel: Reliability, figs: dict[str, str]
) -> list[str]:
    """The reliability diagrams of the baseline and the best focal variant (or a note)."""
    sections = ["<h2>Reliability diagrams (test blocks)</h2>"]
    absent = [v for v in (baseline, best) if v not in rel]
    if absent:
        sections.append(
            f'<p class="note">No reliability data for {html.escape(", ".join(absent))}.</p>'
        )
    if "reliability" in figs:
        sections.append(_img(figs["reliability"], "reliability diagrams"))
    return sections


def _pbo_sections(verdicts: pd.DataFrame, figs: dict[str, str]) -> list[str]:
    """The CSCV logit histogram (or a note) and how PBO was computed."""
    sections = ["<h2>PBO: CSCV logit distribution</h2>"]
    if "cscv_histogram" not in figs:
        sections.append('<p class="note">No CSCV logits supplied.</p>')
    else:
        sections.append(_img(figs["cscv_histogram"], "histogram of CSCV logits"))
    pbo_note = ""
    if "pbo_source" in verdicts.columns:
        r0 = verdicts.iloc[0]
        pbo_note = (
            f'<p class="note">PBO computed on {html.escape(str(r0["pbo_source"]))} '
            f"({html.escape(str(r0['pbo_metric']))}, {r0['pbo_n_blocks']} blocks, "
            f"{r0['pbo_rows_dropped']} oldest rows dropped).</p>"
        )
    sections.append(pbo_note)
    return sections
