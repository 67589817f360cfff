"""The drills' sweep cache: the finished default sweep's home (results database, model store,
Dagster runs) kept per sweep identity and market, and copied into a later drill's fresh home
instead of training the same 125 cells again.

An entry is ``<cache>/<key>/`` (default ``<cache>`` = ``./.drill_sweep_cache``, the drills'
``--sweep-cache DIR``; ``--no-sweep-cache`` bypasses it) holding ``home/`` (the home as the
sweep left it, without its ``dagster.yaml``) and ``key.json`` (what the key digests, written
last: an entry without it is incomplete and ignored). The key (:func:`cache_key` of
:func:`key_document`) digests

- the sweep's identity fingerprint (:mod:`cvn_assets.ablation.identity`: every setting, the
  definition, the data -- the synthetic market's arguments, so the scenario's events too --,
  the library versions and the source of every module that computes a cell's numbers);
- the drill's market config as given (the ``market_data`` resource config);
- the source of the modules that run the sweep and store its results (:data:`STORE_CODE`:
  the sweep command and its asset modules, the settings, the stores and their migrations),
  which the identity does not cover because they change no number, only how and where it is
  kept.

Any change of one of them is another key: the stale entry is never read (and stays on disk
until deleted; each is about 170 MB). After a restore the drill still runs the sweep command
on the home, which checks every stored cell against the identity (``reused``) and trains
none: the cache only saves the training, never the check.

Only a home that holds everything is cached: with ``$CVN_DATABASE_URL`` or ``$CVN_STORE_DIR``
set (the results or the models outside the home) or the Celery executor, the drill runs the
sweep as before (:func:`uncacheable`). This module imports no Dagster.
"""

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cvn_assets.ablation.identity import canonical_json, digest

DEFAULT_CACHE = ".drill_sweep_cache"
KEY_FILE = "key.json"
HOME_DIR = "home"
#: files of a home never cached: the instance config names the home's absolute path (the
#: restoring drill writes its own)
NOT_CACHED = ("dagster.yaml",)
_ROOT = Path(__file__).resolve().parent.parent  # the project root (cvn_assets/, resources/)
#: sources (relative to the project root) that run the sweep and store its results (the
#: sweep command, its assets, the settings, the stores; a directory stands for the ``*.py``
#: files); the guard's modules are not among them: the champions and the replay run after
#: the restore, on the code of the day
STORE_CODE: tuple[str, ...] = (
    "cvn_assets/sweep.py",
    "cvn_assets/settings.py",
    "cvn_assets/partitions.py",
    "cvn_assets/definitions.py",
    "cvn_assets/assets/_util.py",
    "cvn_assets/assets/cells.py",
    "cvn_assets/assets/celery_cells.py",
    "cvn_assets/assets/checks.py",
    "cvn_assets/assets/market.py",
    "cvn_assets/assets/results.py",
    "cvn_assets/assets/training.py",
    "cvn_assets/ablation",
    "cvn_assets/market",
    "cvn_assets/execution",
    "resources/db.py",
    "resources/home_source.py",
    "resources/instance_storage.py",
    "resources/market_data.py",
    "resources/model_store.py",
    "resources/results_store.py",
    "resources/sweep_settings.py",
    "resources/migrations",
)


def store_code_digest(root: Path = _ROOT, paths: tuple[str, ...] = STORE_CODE) -> str:
    """SHA-256 (16 hex) of the names and bytes of the ``paths`` under ``root`` (a directory:
    the ``*.py`` files in it and below, sorted). Raises ``FileNotFoundError`` for a missing path."""
    h = hashlib.sha256()
    for rel in paths:
        p = root / rel
        if not p.exists():
            raise FileNotFoundError(f"sweep cache: source {p} does not exist")
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def key_document(
    fingerprint: str, market_cfg: Mapping[str, Any], store_code: str
) -> dict[str, Any]:
    """What an entry's key digests (also written in its ``key.json``)."""
    if not (isinstance(fingerprint, str) and fingerprint):
        raise ValueError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
    return json.loads(
        canonical_json(
            {
                "sweep_fingerprint": fingerprint,
                "market_data": dict(market_cfg),
                "store_code": store_code,
            }
        )
    )


def cache_key(document: Mapping[str, Any]) -> str:
    """The entry name (16 hex) of a :func:`key_document`: a sweep of that identity
    fingerprint on that market, stored by code of that digest."""
    return digest(dict(document))


def uncacheable(env: Mapping[str, str]) -> str | None:
    """Why a drill's sweep cannot be cached in this environment (None: it can): the results
    database or the model store outside the home, or the Celery executor."""
    for var in ("CVN_DATABASE_URL", "CVN_STORE_DIR"):
        if env.get(var):
            return f"${var} is set: the sweep's results are not all in the drill's home"
    if (env.get("CVN_EXECUTOR") or "in_process").strip().lower() != "in_process":
        return "CVN_EXECUTOR is not in_process"
    return None


def restore(entry: Path, home: Path) -> bool:
    """Copy a complete entry's home into ``home`` (the drill's fresh home); False (nothing
    copied) when the entry is absent or incomplete."""
    if not (entry / KEY_FILE).is_file() or not (entry / HOME_DIR).is_dir():
        return False
    shutil.copytree(entry / HOME_DIR, home, dirs_exist_ok=True)
    return True


def save(home: Path, entry: Path, document: Mapping[str, Any]) -> None:
    """Store ``home`` (the finished sweep's) as ``entry``: copied beside it first, its
    ``key.json`` written last, then renamed into place (a crash leaves no complete entry);
    an existing complete entry is kept."""
    if (entry / KEY_FILE).is_file():
        return
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(home, tmp / HOME_DIR, ignore=shutil.ignore_patterns(*NOT_CACHED))
    (tmp / KEY_FILE).write_text(json.dumps(dict(document), indent=1, sort_keys=True) + "\n")
    if entry.exists():  # an incomplete entry of an earlier crash
        shutil.rmtree(entry)
    os.replace(tmp, entry)
