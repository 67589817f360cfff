"""The drills' sweep cache (cvn_assets/drill_cache.py): its key, and what it stores and restores.

The key is checked against a SHA-256 computed here from the canonical JSON of what it must
digest; the store and the restore against the bytes of the files themselves."""

import hashlib
import json

import pytest

from cvn_assets.drill_cache import (
    KEY_FILE,
    cache_key,
    key_document,
    restore,
    save,
    store_code_digest,
    uncacheable,
)

CRASH = {"edge": 4.0, "edge_shift_at": "2026-01-19T00:00:00+00:00", "edge_multiplier": 0.0}


def _sha16(value) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_the_key_digests_the_fingerprint_the_market_and_the_store_code():
    doc = key_document("50a5adcdce14ea17", CRASH, "0123456789abcdef")
    expected = {
        "sweep_fingerprint": "50a5adcdce14ea17",
        "market_data": CRASH,
        "store_code": "0123456789abcdef",
    }
    assert doc == expected
    assert cache_key(doc) == _sha16(expected)
    # equal settings: the same key, whatever the order of the market's fields
    reordered = dict(reversed(list(CRASH.items())))
    assert cache_key(key_document("50a5adcdce14ea17", reordered, "0123456789abcdef")) == (
        cache_key(doc)
    )
    # any change is another key
    others = [
        key_document("50a5adcdce14ea18", CRASH, "0123456789abcdef"),
        key_document("50a5adcdce14ea17", {**CRASH, "edge": 4.5}, "0123456789abcdef"),
        key_document("50a5adcdce14ea17", {"edge": 4.0}, "0123456789abcdef"),
        key_document("50a5adcdce14ea17", CRASH, "0123456789abcdee"),
    ]
    assert len({cache_key(doc), *(cache_key(o) for o in others)}) == 5
    with pytest.raises(ValueError, match="fingerprint must be a non-empty string"):
        key_document("", CRASH, "x")


def test_the_store_code_digest_follows_every_byte_and_file(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("A = 1\n")
    (tmp_path / "pkg" / "notes.txt").write_text("not code")
    (tmp_path / "top.py").write_text("T = 2\n")
    paths = ("top.py", "pkg")
    h = hashlib.sha256()
    for rel, text in (("top.py", "T = 2\n"), ("pkg/a.py", "A = 1\n")):
        h.update(rel.encode() + b"\0" + text.encode() + b"\0")
    first = store_code_digest(tmp_path, paths)
    assert first == h.hexdigest()[:16]
    (tmp_path / "pkg" / "notes.txt").write_text("changed, but not a .py file")
    assert store_code_digest(tmp_path, paths) == first
    (tmp_path / "pkg" / "a.py").write_text("A = 2\n")
    second = store_code_digest(tmp_path, paths)
    assert second != first
    (tmp_path / "pkg" / "b.py").write_text("")
    assert store_code_digest(tmp_path, paths) not in {first, second}
    with pytest.raises(FileNotFoundError, match="gone.py"):
        store_code_digest(tmp_path, ("gone.py",))
    # the project's own list exists
    assert len(store_code_digest()) == 16


def _files(root):
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_save_then_restore_copies_the_home_but_its_instance_config(tmp_path):
    home = tmp_path / "home"
    (home / "storage" / "cvn" / "model_baseline").mkdir(parents=True)
    (home / "storage" / "cvn" / "model_baseline" / "CURRENT").write_text("abc\n")
    (home / "cvn_results.sqlite").write_bytes(bytes(range(256)))
    (home / "dagster.yaml").write_text(f"base_dir: {home}/history\n")
    entry = tmp_path / "cache" / "k1"
    doc = {"sweep_fingerprint": "f", "market_data": {}, "store_code": "c"}
    assert not restore(entry, tmp_path / "nowhere")  # no entry yet
    save(home, entry, doc)
    assert json.loads((entry / KEY_FILE).read_text()) == doc
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert restore(entry, fresh)
    expected = {k: v for k, v in _files(home).items() if k != "dagster.yaml"}
    assert _files(fresh) == expected
    # a complete entry is kept as it is
    (home / "cvn_results.sqlite").write_bytes(b"changed")
    save(home, entry, doc)
    assert (entry / "home" / "cvn_results.sqlite").read_bytes() == bytes(range(256))


def test_an_incomplete_entry_is_never_restored_and_is_replaced(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "f").write_text("new")
    entry = tmp_path / "cache" / "k1"
    (entry / "home").mkdir(parents=True)
    (entry / "home" / "f").write_text("half-written")  # a crash before key.json
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert not restore(entry, fresh)
    assert list(fresh.iterdir()) == []
    save(home, entry, {"k": 1})
    assert (entry / "home" / "f").read_text() == "new"
    assert restore(entry, fresh)
    assert (fresh / "f").read_text() == "new"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["k1"]  # no temporary left


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({}, None),
        ({"CVN_EXECUTOR": "in_process"}, None),
        ({"CVN_DATABASE_URL": "postgresql://x@h/db"}, "CVN_DATABASE_URL"),
        ({"CVN_STORE_DIR": "/srv/models"}, "CVN_STORE_DIR"),
        ({"CVN_EXECUTOR": "celery"}, "CVN_EXECUTOR"),
    ],
)
def test_only_a_home_that_holds_everything_is_cached(env, why):
    got = uncacheable(env)
    assert (got is None) if why is None else (why in got)
