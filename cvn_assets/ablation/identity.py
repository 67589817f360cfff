"""The identity of a sweep: every number is tied to the settings, data and code that made it.

A sweep's identity is a JSON document with four parts, and its fingerprint is the SHA-256 of
that document in canonical form (sorted keys, no whitespace), cut to 16 hex digits:

- ``settings``   the run-time settings (label strategy, every XGBoost parameter, seed,
  embargo, fees, calibration ...: every field of the sweep resource except ``sweep_id``);
- ``definition`` the definition-time settings (universe, fold count, each variant's name,
  loss function, gamma and alpha);
- ``data``       where the candles come from: the synthetic generator's arguments, or, for CSV
  files, the SHA-256 of each file used (per crypto);
- ``code``       the project version, the versions of XGBoost, NumPy, pandas and SciPy, and a
  digest of the source of the modules that compute numbers (:data:`CELL_ROOTS`,
  :data:`SWEEP_ROOTS` and every ``cvn_assets`` module they import).

Each stored artifact is keyed by the fingerprint of exactly what it depends on (content
addressing), so sweeps with different settings never share a slot and a sweep with the same
settings resumes for free:

- :func:`market_fingerprint` (per crypto): the crypto's data, the market settings
  (:data:`MARKET_SETTINGS`), the fold count, the code;
- :func:`model_fingerprint` (per crypto x fold x variant): the above, the variant definition
  and every run-time setting except the calibration ones (:data:`CALIBRATION_SETTINGS`);
- :func:`calibrated_fingerprint`: the model fingerprint and the calibration settings.

Changing a variant's gamma while keeping its name therefore changes its cells' fingerprints,
and they are retrained. This module imports no Dagster.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

#: run-time settings that shape the market stage (labels, fold plans); the rest shape models
MARKET_SETTINGS: frozenset[str] = frozenset(
    {"label_strategy", "embargo_pct", "early_stopping_frac"}
)
#: run-time settings used only after training (calibration block, trade simulation)
CALIBRATION_SETTINGS: frozenset[str] = frozenset({"primary_calibration", "fee_per_side"})
#: the modules that compute a cell's numbers (data, features, labels, folds, training,
#: calibration, scoring): the cell digest covers them and every ``cvn_assets`` module they
#: import, transitively, so a module counts exactly when a cell's computation can reach it
CELL_ROOTS: frozenset[str] = frozenset(
    {
        "market/synthetic_market.py",
        "market/candles_io.py",
        "market/features.py",
        "market/labels.py",
        "market/dataset.py",
        "market/folds.py",
        "ablation/evaluation.py",
    }
)
#: modules that turn cells into decisions and pages (part of the sweep's code, not a cell's)
SWEEP_ROOTS: frozenset[str] = CELL_ROOTS | {"ablation/gates.py", "ablation/report.py"}

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # cvn_assets/


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, compact separators, floats by ``repr``)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest(value: Any, length: int = 16) -> str:
    """First ``length`` hex digits of the SHA-256 of ``canonical_json(value)``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes. Raises ``FileNotFoundError`` for a missing file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def module_closure(roots: frozenset[str] | set[str]) -> list[str]:
    """``roots`` and every ``cvn_assets`` module they import, transitively (sorted file names).

    Imports are read with :mod:`ast` (``import cvn_assets.x`` and ``from cvn_assets[.x]
    import ...``), without importing anything.
    """
    import ast

    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or not (_PACKAGE_DIR / name).is_file():
            continue
        seen.add(name)
        tree = ast.parse((_PACKAGE_DIR / name).read_text(), filename=name)
        for node in ast.walk(tree):
            mods: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:  # a module, or a package's
                mods = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for m in mods:
                parts = m.split(".")
                if parts[0] == "cvn_assets" and len(parts) >= 2:  # not a file: skipped above
                    todo.append("/".join(parts[1:]) + ".py")
    return sorted(seen)


@lru_cache(maxsize=1)
def source_digests() -> dict[str, str]:
    """``{"cell": ..., "sweep": ...}``: SHA-256 digests (16 hex) of the computing modules.

    ``cell`` covers :data:`CELL_ROOTS` and what they import (:func:`module_closure`);
    ``sweep`` covers :data:`SWEEP_ROOTS` likewise (adding the gates and the report). Modules
    no cell computation reaches (orchestration, the production guard) do not count.
    """

    def _digest(names: list[str]) -> str:
        h = hashlib.sha256()
        for name in names:
            h.update(name.encode() + b"\0" + (_PACKAGE_DIR / name).read_bytes() + b"\0")
        return h.hexdigest()[:16]

    return {
        "cell": _digest(module_closure(CELL_ROOTS)),
        "sweep": _digest(module_closure(SWEEP_ROOTS)),
    }


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


@lru_cache(maxsize=1)
def code_versions() -> dict[str, str]:
    """Versions of the project and the numeric libraries, and the source digests."""
    import numpy
    import pandas
    import scipy
    import xgboost

    return {
        "cvn_focal": _version("cvn-focal"),
        "xgboost": str(xgboost.__version__),
        "numpy": str(numpy.__version__),
        "pandas": str(pandas.__version__),
        "scipy": str(scipy.__version__),
        "source_cell": source_digests()["cell"],
        "source_sweep": source_digests()["sweep"],
    }


@dataclass(frozen=True)
class SweepIdentity:
    """The four parts of a sweep's identity (plain JSON-able dicts)."""

    settings: Mapping[str, Any]
    definition: Mapping[str, Any]
    data: Mapping[str, Any]
    code: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return json.loads(
            canonical_json(
                {
                    "settings": dict(self.settings),
                    "definition": dict(self.definition),
                    "data": dict(self.data),
                    "code": dict(self.code),
                }
            )
        )

    @property
    def fingerprint(self) -> str:
        return digest(self.as_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SweepIdentity":
        missing = [k for k in ("settings", "definition", "data", "code") if k not in d]
        if missing:
            raise ValueError(f"sweep identity: missing part(s) {missing}")
        return cls(d["settings"], d["definition"], d["data"], d["code"])

    # --- what each artifact depends on ---------------------------------------------------
    def crypto_data(self, crypto: str) -> Any:
        """The data identity of one crypto (its file hash, or the generator arguments)."""
        return crypto_data_identity(self.data, crypto)

    def market_fingerprint(self, crypto: str) -> str:
        """Fingerprint of the market stage of ``crypto`` (candles ... fold plans)."""
        return digest(
            {
                "data": self.crypto_data(crypto),
                "settings": {k: v for k, v in self.settings.items() if k in MARKET_SETTINGS},
                "n_folds": self.definition["n_folds"],
                "code": _cell_code(self.code),
            }
        )

    def model_fingerprint(self, crypto: str, fold: int, variant: str) -> str:
        """Fingerprint of one trained booster (crypto x fold x variant)."""
        return digest(
            {
                "market": self.market_fingerprint(crypto),
                "fold": int(fold),
                "variant": self.variant(variant),
                "settings": {
                    k: v for k, v in self.settings.items() if k not in CALIBRATION_SETTINGS
                },
            }
        )

    def calibrated_fingerprint(self, crypto: str, fold: int, variant: str) -> str:
        """Fingerprint of one calibrated, scored cell."""
        return digest(
            {
                "model": self.model_fingerprint(crypto, fold, variant),
                "settings": {k: v for k, v in self.settings.items() if k in CALIBRATION_SETTINGS},
            }
        )

    def variant(self, name: str) -> Mapping[str, Any]:
        for v in self.definition["variants"]:
            if v["name"] == name:
                return dict(v)
        raise ValueError(f"sweep identity: no variant named {name!r}")


def crypto_data_identity(data: Mapping[str, Any], crypto: str) -> dict[str, Any]:
    """One crypto's part of a data identity (``MarketDataResource.data_identity``): its CSV
    file's name and hash, or the synthetic generator's arguments with the crypto's name.
    Raises ``ValueError`` naming a crypto with no recorded file."""
    if data.get("source") == "csv":
        files = data.get("files", {})
        if crypto not in files:
            raise ValueError(f"sweep identity: no CSV file recorded for crypto {crypto!r}")
        return {"source": "csv", "file": files[crypto]}
    return {**data, "crypto": crypto}


def _cell_code(code: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in code.items() if k != "source_sweep"}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, list) and d and all(isinstance(x, Mapping) and "name" in x for x in d):
        out = {}
        for x in d:
            out.update(_flatten(x, f"{prefix}[{x['name']}]"))
        return out
    return {prefix: d}


def identity_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``[(dotted.path, old value, new value)]`` for every leaf that differs (sorted).

    Variants are compared by name (``definition.variants[focal_g2_a025].gamma``); a leaf
    present on one side only shows ``None`` on the other.
    """
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def describe_diff(diff: list[tuple[str, Any, Any]], limit: int = 12) -> str:
    """One line per changed leaf: ``settings.eta: 0.05 -> 0.1``."""
    lines = [f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:limit]]
    if len(diff) > limit:
        lines.append(f"... and {len(diff) - limit} more")
    return "; ".join(lines)


def module_digest(*names: str, extra: Any = None) -> str:
    """Digest (16 hex) of the source of the named ``cvn_assets`` modules (and ``extra``):
    the Dagster ``code_version`` of an asset that calls them."""
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode() + b"\0" + (_PACKAGE_DIR / name).read_bytes() + b"\0")
    if extra is not None:
        h.update(canonical_json(extra).encode())
    return h.hexdigest()[:16]
