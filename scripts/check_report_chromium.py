#!/usr/bin/env python3
"""Render a cvn-focal HTML report in headless Chromium and check every image decoded.

Why: ``tests/unit/test_report.py`` proves each ``<img>`` carries a base64 PNG, but only a real
browser proves the page renders offline: that the data URIs are accepted, the images decode
(``naturalWidth > 0``) and nothing is fetched from the network.  The script copies the report
to a temporary file with a small inline script appended that, on ``load``, writes each image's
``complete``/``naturalWidth``/``naturalHeight`` as JSON into a ``<pre id="cvn-image-check">``;
``chromium --dump-dom`` then prints the DOM after load and the JSON is read back.  A second run
takes a full-page ``--screenshot`` for a human to look at.

Usage::

    python scripts/check_report_chromium.py REPORT.html [--screenshot out.png]
        [--chromium /usr/bin/chromium] [--timeout 60]

Exit status: 0 all images loaded, 1 some image failed (or the check could not be read),
2 Chromium not found.  A JSON summary is printed on stdout.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHECK_ID = "cvn-image-check"
_PROBE = f"""
<script>
window.addEventListener("load", function () {{
  var out = Array.prototype.map.call(document.images, function (im) {{
    return {{alt: im.alt, complete: im.complete, w: im.naturalWidth, h: im.naturalHeight,
             data_uri: im.getAttribute("src").indexOf("data:image/png;base64,") === 0}};
  }});
  var el = document.createElement("pre");
  el.id = "{CHECK_ID}";
  el.textContent = JSON.stringify(out);
  document.body.appendChild(el);
}});
</script>
"""
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def _chromium_cmd(chromium: str, profile: Path, *extra: str) -> list[str]:
    return [chromium, *_FLAGS, f"--user-data-dir={profile}", *extra]


def _inject_probe(page: str) -> str:
    marker = page.lower().rfind("</body>")
    if marker < 0:
        raise ValueError("report has no </body> tag")
    return page[:marker] + _PROBE + page[marker:]


def check_report(
    report: Path, *, chromium: str, screenshot: Path | None, timeout: float
) -> dict[str, Any]:
    """Return a summary dict; ``ok`` is True when every image decoded with a non-zero size."""
    page = report.read_text(encoding="utf-8")
    n_img_source = len(re.findall(r"<img\b", page, flags=re.IGNORECASE))
    with tempfile.TemporaryDirectory(prefix="cvn-chromium-") as tmp:
        tmpdir = Path(tmp)
        probe_page = tmpdir / "report_probe.html"
        probe_page.write_text(_inject_probe(page), encoding="utf-8")
        dom = subprocess.run(
            _chromium_cmd(
                chromium,
                tmpdir / "profile-dom",
                "--virtual-time-budget=10000",
                "--dump-dom",
                probe_page.as_uri(),
            ),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        shot_ok = None
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                _chromium_cmd(
                    chromium,
                    tmpdir / "profile-shot",
                    "--window-size=1280,6000",
                    f"--screenshot={screenshot.resolve()}",
                    report.resolve().as_uri(),
                ),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            shot_ok = screenshot.exists() and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    found = re.search(rf'<pre id="{CHECK_ID}">(.*?)</pre>', dom.stdout, flags=re.DOTALL)
    if not found:
        return {
            "ok": False,
            "error": "image check element not found in the dumped DOM",
            "chromium_returncode": dom.returncode,
            "stderr_tail": dom.stderr[-2000:],
        }
    images = json.loads(html.unescape(found.group(1)))
    failed = [im for im in images if not (im["complete"] and im["w"] > 0 and im["h"] > 0)]
    not_data = [im for im in images if not im["data_uri"]]
    return {
        "ok": not failed and not not_data and len(images) == n_img_source,
        "n_images_source": n_img_source,
        "n_images_dom": len(images),
        "failed": failed,
        "not_data_uri": not_data,
        "images": images,
        "screenshot": None if screenshot is None else str(screenshot),
        "screenshot_ok": shot_ok,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the report HTML file")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium binary")
    parser.add_argument("--screenshot", type=Path, default=None, help="write a PNG here")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per Chromium run")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        parser.error(f"report {str(args.report)!r} is not a file")
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0; got {args.timeout}")
    chromium = shutil.which(args.chromium)
    if chromium is None:
        print(json.dumps({"ok": False, "error": f"chromium not found: {args.chromium}"}))
        return 2
    summary = check_report(
        args.report, chromium=chromium, screenshot=args.screenshot, timeout=args.timeout
    )
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
