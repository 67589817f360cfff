"""A trained booster plus its fitted calibrators and BUY threshold (spec 7.2, ADR-15).

The calibrators and the threshold are fitted on the calibration block only (neither train
nor test); the held-out test block is scored once, and its per-row margins, labels and
realized trade returns are kept beside the model so the fan-in (``finetune_results``) and the
report never need to load a booster again.

Persistence is code-free: the booster in XGBoost's UBJSON format (``XGBWrapper.save``), the
calibrators, threshold and metrics as JSON, the test-block arrays as ``.npz`` loaded with
``allow_pickle=False``.
"""

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvn_assets.ablation.calibration import Calibrator, calibrator_from_dict
from cvn_assets.ablation.training import XGBWrapper

MODEL_DIR = "model"
CALIBRATION_FILE = "calibration.json"
TEST_EVAL_FILE = "test_eval.npz"


@dataclass
class CalibratedModel:
    """``predict_proba`` = primary calibrator on the booster's margins; ``predict`` = threshold."""

    model: XGBWrapper
    calibrators: dict[str, Calibrator]
    primary: str
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)
    test_eval: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.primary not in self.calibrators:
            raise ValueError(
                f"primary calibration {self.primary!r} not among fitted {sorted(self.calibrators)}"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold!r} is not a probability")

    def predict_margin(self, X: Any) -> np.ndarray:
        return self.model.predict_margin(X)

    def predict_proba(self, X: Any, method: str | None = None) -> np.ndarray:
        cal = self.calibrators[method or self.primary]
        p1 = np.asarray(cal.transform(self.predict_margin(X)), dtype=np.float64)
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= self.threshold).astype(np.int8)

    # --- persistence ------------------------------------------------------------------
    def save(self, directory: Path, *, model_files: Path | None = None) -> None:
        """Write the cell; ``model_files``: a directory already holding this booster's saved
        files (``XGBWrapper.save``), hard-linked instead of serialised again."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_DIR).mkdir(exist_ok=True)
        if model_files is not None:
            link_files(model_files, directory / MODEL_DIR / "booster")
        else:
            self.model.save(directory / MODEL_DIR / "booster")
        payload = {
            "primary": self.primary,
            "threshold": float(self.threshold),
            "calibrators": {m: c.to_dict() for m, c in self.calibrators.items()},
            "info": _jsonable(self.info),
        }
        (directory / CALIBRATION_FILE).write_text(json.dumps(payload, indent=1, sort_keys=True))
        if self.test_eval:
            arrays: dict[str, Any] = dict(self.test_eval)  # numeric arrays only: no pickle
            np.savez(directory / TEST_EVAL_FILE, **arrays)

    @classmethod
    def load(cls, directory: Path, *, with_model: bool = True) -> "CalibratedModel":
        payload = json.loads((directory / CALIBRATION_FILE).read_text())
        model = XGBWrapper.load(directory / MODEL_DIR / "booster") if with_model else None
        test_eval: dict[str, np.ndarray] = {}
        if (directory / TEST_EVAL_FILE).exists():
            with np.load(directory / TEST_EVAL_FILE, allow_pickle=False) as z:
                test_eval = {k: z[k] for k in z.files}
        return cls(
            model=model,  # type: ignore[arg-type]
            calibrators={m: calibrator_from_dict(d) for m, d in payload["calibrators"].items()},
            primary=payload["primary"],
            threshold=float(payload["threshold"]),
            info=payload["info"],
            test_eval=test_eval,
        )


def link_files(src: Path, dst: Path) -> None:
    """Hard-link every file of ``src`` into ``dst`` (copy where linking is impossible).

    Stored artifacts are never modified in place (each write is a new directory renamed into
    place), so a link is as good as a copy and costs no serialisation.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for f in Path(src).iterdir():
        if f.is_file():
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj
