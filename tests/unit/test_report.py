"""Tests for cvn_assets.ablation.report (self-contained HTML) and
scripts/check_report_chromium.py."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cvn_assets.ablation.gates import (
    ECE_METHODS,
    evaluate_gates,
    pbo_performance_matrix,
)
from cvn_assets.ablation.report import best_focal_variant, reliability_bins, render_report
from cvn_assets.ablation.stats import cscv_logits

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_report_chromium.py"
CHROMIUM = Path("/usr/bin/chromium")
CRYPTOS = ("BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC")
TITLE = "Focal <sweep> & gates"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}


def _results() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    rows = []
    for v, gain in {"baseline": 0.0, "focal_a": 0.05, "focal_b": -0.03, "focal_c": 0.0}.items():
        for f in range(5):
            for ci, c in enumerate(CRYPTOS):
                rows.append(
                    {
                        "crypto": c,
                        "fold": f,
                        "variant": v,
                        "loss_function": "binary:logistic" if v == "baseline" else "focal",
                        "f1_buy": 0.4 + 0.02 * f + 0.01 * ci + gain + rng.normal(0, 0.01),
                        **{f"ece_hold_{m}": 0.03 + rng.normal(0, 0.002) for m in ECE_METHODS},
                    }
                )
    return pd.DataFrame(rows)


def _prob_y(seed: int, n: int = 800) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n)
    return p, (rng.uniform(0, 1, n) < p).astype(int)


class _StrictNesting(HTMLParser):
    """Fails on any unclosed or mis-nested non-void element."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> does not close {self.stack[-1:]}")
        else:
            self.stack.pop()


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return _results()


@pytest.fixture(scope="module")
def verdicts(results: pd.DataFrame) -> pd.DataFrame:
    return evaluate_gates(results, n_resamples=1000)


@pytest.fixture(scope="module")
def report(results: pd.DataFrame, verdicts: pd.DataFrame, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    matrix, _ = pbo_performance_matrix(results)
    logits = cscv_logits(matrix.to_numpy()[1:], 8)
    best = best_focal_variant(verdicts)
    reliability = {
        "baseline": {m: _prob_y(i) for i, m in enumerate(ECE_METHODS)},
        best: {m: _prob_y(10 + i) for i, m in enumerate(ECE_METHODS)},
        "focal_b": {"none": _prob_y(99)},  # not the best: ignored
    }
    out = tmp_path_factory.mktemp("report") / "sub" / "report.html"
    return render_report(
        results, verdicts, reliability=reliability, pbo_logits=logits, out_path=out, title=TITLE
    )


def _parse(path: Path) -> tuple[str, _StrictNesting]:
    text = path.read_text(encoding="utf-8")
    parser = _StrictNesting()
    parser.feed(text)
    parser.close()
    return text, parser


def test_report_is_well_formed_self_contained_html(report: Path) -> None:
    text, parser = _parse(report)
    assert report.is_file() and text.startswith("<!DOCTYPE html>")
    assert parser.errors == [] and parser.stack == []
    assert {"html", "head", "body", "table", "img", "title"} <= parser.tags
    assert "<title>Focal &lt;sweep&gt; &amp; gates</title>" in text  # title escaped
    assert not re.search(r"https?://|src=\"//|<script|<link", text)


def test_every_image_is_an_embedded_png(report: Path) -> None:
    _, parser = _parse(report)
    assert len(parser.imgs) == 4  # forest, heatmap, reliability, PBO histogram
    for img in parser.imgs:
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == PNG_MAGIC
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            assert im.format == "PNG" and im.width > 100 and im.height > 100
        assert img["alt"]


def test_report_content(report: Path, verdicts: pd.DataFrame) -> None:
    text, _ = _parse(report)
    for v in verdicts["variant"]:
        assert f"<td>{v}</td>" in text
    locked = verdicts.loc[verdicts["lock"].fillna(False).astype(bool), "variant"].tolist()
    assert locked == ["focal_a"]
    assert text.count('class="pass">LOCK</td>') == 1
    assert "ECE_HOLD difference vs baseline, every calibration method" in text
    assert "1 oldest rows dropped" in text
    assert "Per-asset breakdown" in text and "Per-fold tests" in text
    assert "No reliability data" not in text


def test_report_without_optional_figures(
    results: pd.DataFrame, verdicts: pd.DataFrame, tmp_path: Path
) -> None:
    out = render_report(
        results,
        verdicts,
        reliability=None,
        pbo_logits=None,
        out_path=tmp_path / "r.html",
        title="t",
    )
    text, parser = _parse(out)
    assert len(parser.imgs) == 2
    assert "No CSCV logits supplied" in text
    assert "No reliability data for baseline, focal_a" in text


def test_best_focal_variant_prefers_lock_then_delta(verdicts: pd.DataFrame) -> None:
    assert best_focal_variant(verdicts) == "focal_a"
    unlocked = verdicts.assign(lock=verdicts["lock"].where(verdicts["is_baseline"], False))
    unlocked.loc[unlocked["variant"] == "focal_c", "mean_delta"] = 1.0
    assert best_focal_variant(unlocked) == "focal_c"


def test_reliability_bins_hand_checked() -> None:
    prob = np.array([0.05, 0.05, 0.95, 1.0])
    y = np.array([0, 1, 1, 1], dtype=np.int8)
    mean_pred, frac_pos, counts, ece = reliability_bins(prob, y)
    # bin 0: mean .05, rate .5; bin 14 ([14/15, 1], p = 1 included): mean .975, rate 1
    # ECE = 2/4 * |.5 - .05| + 2/4 * |1 - .975| = .225 + .0125 = .2375
    assert counts[0] == 2 and counts[14] == 2 and counts.sum() == 4
    assert mean_pred[14] == pytest.approx(0.975) and frac_pos[0] == pytest.approx(0.5)
    assert np.isnan(mean_pred[7])
    assert ece == pytest.approx(0.2375)
    with pytest.raises(ValueError, match=r"prob\[0\] must be in \[0, 1\]"):
        reliability_bins([-0.1, 0.5], [0, 1])
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins(prob, y, n_bins=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"reliability": {"baseline": {"none": (np.array([0.2, 1.2]), np.array([0, 1]))}}},
            r"prob\[1\]",
        ),
        (
            {"reliability": {"baseline": {"none": (np.array([0.2, 0.3]), np.array([0, 2]))}}},
            r"y\[1\] must be 0 or 1",
        ),
        (
            {"reliability": {"baseline": {"none": (np.array([0.2]), np.array([0, 1]))}}},
            "equal length",
        ),
        ({"reliability": {"baseline": {"beta": (np.array([0.2]), np.array([0]))}}}, "'beta'"),
        ({"pbo_logits": np.array([0.1, np.nan])}, r"pbo_logits\[1\]"),
        ({"title": "  "}, "title"),
    ],
)
def test_render_report_rejects_bad_input_before_writing(
    results: pd.DataFrame, verdicts: pd.DataFrame, tmp_path: Path, kwargs: dict, match: str
) -> None:
    out = tmp_path / "bad.html"
    args: dict = {"reliability": None, "pbo_logits": None, "title": "t"} | kwargs
    with pytest.raises(ValueError, match=match):
        render_report(results, verdicts, out_path=out, **args)
    assert not out.exists()


def test_render_report_rejects_mismatched_inputs(
    results: pd.DataFrame, verdicts: pd.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "bad.html"
    with pytest.raises(ValueError, match="missing column"):
        render_report(results, verdicts.drop(columns=["gate_pbo"]), out_path=out)
    with pytest.raises(ValueError, match="disagree on variants"):
        render_report(results, verdicts[verdicts["variant"] != "focal_c"], out_path=out)
    with pytest.raises(ValueError, match="incomplete grid"):
        render_report(results.iloc[1:], verdicts, out_path=out)
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# headless Chromium
# --------------------------------------------------------------------------------------------
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not found")


def _run_script(*args: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=180
    )
    return proc.returncode, json.loads(proc.stdout)


@needs_chromium
def test_chromium_renders_every_image(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    rc, summary = _run_script(str(report), "--screenshot", str(shot))
    assert rc == 0, summary
    assert summary["n_images_dom"] == 4 and all(im["w"] > 0 for im in summary["images"])
    assert summary["screenshot_ok"] is True
    with Image.open(shot) as im:
        assert im.width == 1280


@needs_chromium
def test_chromium_check_catches_a_broken_image(report: Path, tmp_path: Path) -> None:
    text = report.read_text(encoding="utf-8")
    broken = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,bm90IGEgcG5n", text, count=1)  # "not a png"
    page = tmp_path / "broken.html"
    page.write_text(broken, encoding="utf-8")
    rc, summary = _run_script(str(page))
    assert rc == 1
    assert len(summary["failed"]) == 1 and summary["failed"][0]["w"] == 0


def test_chromium_script_reports_missing_binary(report: Path) -> None:
    rc, summary = _run_script(str(report), "--chromium", "/nonexistent/chromium")
    assert rc == 2 and summary["ok"] is False


def test_render_report_embeds_given_figures_as_drawn(
    results: pd.DataFrame, verdicts: pd.DataFrame, tmp_path: Path
) -> None:
    """Figures drawn once by report_figures (what gate_verdicts also puts in its metadata)
    give the very report render_report draws itself; a figure set lacking a plot is refused
    before anything is written."""
    from cvn_assets.ablation.report import report_figures

    matrix, _ = pbo_performance_matrix(results)
    logits = cscv_logits(matrix.to_numpy()[1:], 8)
    own = render_report(results, verdicts, pbo_logits=logits, out_path=tmp_path / "own.html")
    figs = report_figures(results, verdicts, pbo_logits=logits)
    given = render_report(
        results, verdicts, pbo_logits=logits, out_path=tmp_path / "given.html", figures=figs
    )
    assert given.read_text(encoding="utf-8") == own.read_text(encoding="utf-8")
    marked = {**figs, "heatmaps": base64.b64encode(PNG_MAGIC + b"marker").decode()}
    text = render_report(
        results, verdicts, pbo_logits=logits, out_path=tmp_path / "m.html", figures=marked
    ).read_text(encoding="utf-8")
    assert marked["heatmaps"] in text and figs["heatmaps"] not in text
    out = tmp_path / "bad.html"
    with pytest.raises(ValueError, match=r"figures lack \['heatmaps'\]"):
        render_report(results, verdicts, out_path=out, figures={"forest_plot": figs["forest_plot"]})
    assert not out.exists()
