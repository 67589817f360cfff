"""``guard_state``: the guard's state at a glance in the UI (issue 20, item 6).

An unpartitioned asset, materialized after every live hour (one materialization per hour, so
the UI keeps the state over time: the asset's page plots the numeric entries and lists every
materialization's tables). Each materialization reads, through the resources, and writes as
output metadata (nothing is stored):

* ``kill_switch`` (Markdown table): ``CVN_LOSS_FUNCTION`` and ``trading_halted``, their value
  and version (``ftf_config``) and their last change: time, actor, reason (the newest
  ``config_audit`` row);
* ``cryptos`` (Markdown table), one row per crypto of the universe: the live champion
  (version id, variant, loss function, promoted at, by whom: the ``champion`` alias and its
  open alias-history row), the candidate if one is set, the last journaled hour
  (:func:`resources.journal.last_journaled_hours`) and how many closed hours it is behind the
  guard clock's now (:func:`cvn_assets.guard.state.hours_behind`);
* flat entries to plot (:func:`cvn_assets.guard.state.plot_entries`): ``loss_function``,
  ``trading_halted``, ``hours_behind_max``, ``focal_champions``, ... and ``state`` (JSON: all of
  it, for scripts).

Fail-safe (spec 6.4): a crypto without a champion or a journal reads ``none``; a source that
cannot be read (:data:`READ_ERRORS`: the database refuses or does not answer) reads ``unknown``
with its error (``flags_error``, and in the tables), and the asset still materializes --
that state is what an operator needs to see then. The logic is the pure
:mod:`cvn_assets.guard.state`; this module only reads and formats.
"""

from typing import Any

import sqlalchemy as sa
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from cvn_assets.ablation.guardrails import FOCAL
from cvn_assets.guard.state import (
    crypto_row,
    flag_markdown,
    flag_state,
    open_assignment,
    plot_entries,
    state_markdown,
    unknown_flag,
)
from cvn_assets.partitions import SETTINGS
from resources.config_store import HALT_FLAG, LOSS_FLAG, ConfigStore, UnknownFlag
from resources.guard_clock import GuardClock
from resources.journal import last_journaled_hours
from resources.model_registry import ModelRegistry

ASSET = "guard_state"
#: the journal the state reads (the live loop's): materialized before this asset in a run
PAPER_ASSET = "paper_trades"
#: what makes a source "unknown" instead of failing the asset: the database refused or did not
#: answer (SQLAlchemy wraps the driver's errors), or the socket failed
READ_ERRORS = (sa.exc.SQLAlchemyError, OSError)
FLAGS = (LOSS_FLAG, HALT_FLAG)


def _error_text(err: BaseException, where: str) -> str:
    """``Type: first line of the driver's message (where)``: short enough for a table cell;
    ``where`` is a redacted URL (no credentials)."""
    cause = getattr(err, "orig", None) or err
    lines = str(cause).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''} ({where})"


def read_flags(config_store: ConfigStore) -> dict[str, dict[str, Any]]:
    """Each kill-switch flag's :func:`~cvn_assets.guard.state.flag_state`; every flag
    ``unknown`` with the error when the config store cannot be read."""
    try:
        out = {}
        for flag in FLAGS:
            try:
                current: tuple[str, int] | None = config_store.get(flag)
            except UnknownFlag:
                current = None
            out[flag] = flag_state(flag, current, config_store.audit(flag))
        return out
    except READ_ERRORS as err:
        text = _error_text(err, config_store.url_redacted)
        return {flag: unknown_flag(flag, text) for flag in FLAGS}


def read_rows(registry: ModelRegistry, cryptos: tuple[str, ...], now: Any) -> list[dict[str, Any]]:
    """One :func:`~cvn_assets.guard.state.crypto_row` per crypto; the registry's and the
    journal's parts ``unknown`` (with the error) when their database cannot be read."""
    models: dict[str, dict[str, Any]] = {}
    registry_error = journal_error = None
    try:
        for c in cryptos:
            history = registry.history(c)
            models[c] = {
                "champion": registry.alias(c, "champion"),
                "champion_assigned": open_assignment(history, "champion"),
                "candidate": registry.alias(c, "candidate"),
                "candidate_assigned": open_assignment(history, "candidate"),
            }
    except READ_ERRORS as err:
        registry_error = _error_text(err, registry.url_redacted)
    last: dict[str, Any] = {}
    try:
        last = last_journaled_hours(registry.engine, list(cryptos))
    except READ_ERRORS as err:
        journal_error = _error_text(err, registry.url_redacted)
    empty = dict.fromkeys(("champion", "champion_assigned", "candidate", "candidate_assigned"))
    return [
        crypto_row(
            c,
            **(empty if registry_error else models[c]),
            last_hour=last.get(c),
            now=now,
            registry_error=registry_error,
            journal_error=journal_error,
        )
        for c in cryptos
    ]


def _metadata_value(value: Any) -> MetadataValue:
    if value is None:
        return MetadataValue.null()
    if isinstance(value, bool):
        return MetadataValue.bool(value)
    if isinstance(value, int):
        return MetadataValue.int(value)
    return MetadataValue.text(str(value))


@asset(
    name=ASSET,
    group_name="guard",
    kinds={"sql"},
    deps=[AssetKey(PAPER_ASSET)],
    description="The guard's state after each live hour: the kill-switch flags with their "
    "last change, the live champion and candidate per crypto, the last journaled hour per "
    "crypto and how far it is behind the guard clock (output metadata; unknown, with the "
    "error, when a source cannot be read).",
)
def guard_state(
    context: AssetExecutionContext,
    config_store: ConfigStore,
    model_registry: ModelRegistry,
    guard_clock: GuardClock,
) -> MaterializeResult:
    now = guard_clock.now()
    flags = read_flags(config_store)
    rows = read_rows(model_registry, SETTINGS.universe, now)
    flat = plot_entries(flags, rows, loss_flag=LOSS_FLAG, halt_flag=HALT_FLAG, focal=FOCAL)
    unread = {f"flags: {f['error']}" for f in flags.values() if f["error"]}
    unread |= {f"registry: {r['registry_error']}" for r in rows if r["registry_error"]}
    unread |= {f"journal: {r['journal_error']}" for r in rows if r["journal_error"]}
    for text in sorted(unread):
        context.log.warning(f"{ASSET} shows unknown state: {text}")
    metadata: dict[str, Any] = {
        "kill_switch": MetadataValue.md(flag_markdown([flags[f] for f in FLAGS])),
        "cryptos": MetadataValue.md(state_markdown(rows)),
        "guard_now": MetadataValue.text(now.isoformat()),
        **{k: _metadata_value(v) for k, v in flat.items()},
        "state": MetadataValue.json({"now": now.isoformat(), "flags": flags, "cryptos": rows}),
    }
    return MaterializeResult(metadata=metadata)
