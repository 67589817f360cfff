"""Run-config field types that Dagster's config schema checks before a run exists.

Dagster turns a ``Literal`` field into an ``Enum`` config type and a ``list`` of a Python
``Enum`` into an array of one: a value outside the set is refused when the run config is
validated (``execute_in_process`` raises :class:`~dagster.DagsterInvalidConfigError`; the
launchpad and ``dagster job execute`` refuse it) -- before any run is created, naming the
path and the value. The sets are the definition-time settings (:mod:`cvn_assets.settings`):

* :data:`CryptoName`: one crypto of the universe (``CVN_UNIVERSE``);
* :data:`CryptoEnum`: the same, for ``list[CryptoEnum]`` fields (its members are ``str``:
  ``str(member)`` is the symbol);
* :data:`VariantName` / :data:`OptionalVariantName`: a variant of the ablation matrix
  (``CVN_VARIANTS``), the second also ``""`` (none);
* :data:`IsoTime`: ISO time text **with** a UTC offset, or ``""`` (the field's default). The
  schema cannot express a format: pydantic checks it when the op builds its config (the run
  exists then, and fails at once naming the field and the value).

Ranges (``Field(ge=, le=)``) are pydantic's too: checked when the op builds its config.
"""

import enum
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import AfterValidator

from cvn_assets.partitions import SETTINGS

CRYPTOS: tuple[str, ...] = tuple(SETTINGS.universe)
VARIANTS: tuple[str, ...] = tuple(v.name for v in SETTINGS.variants)

CryptoName: Any = Literal[CRYPTOS]  # type: ignore[valid-type]
CryptoEnum: Any = enum.StrEnum("CryptoEnum", {c: c for c in CRYPTOS})
VariantName: Any = Literal[VARIANTS]  # type: ignore[valid-type]
OptionalVariantName: Any = Literal[("", *VARIANTS)]  # type: ignore[valid-type]


def check_iso_time(value: str) -> str:
    """``value`` unchanged when ``""`` or an ISO time with a UTC offset; else ValueError
    (the message does not repeat the value: pydantic's error carries it)."""
    if not value:
        return value
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        why = str(exc).replace(f": {value}", "")
        raise ValueError(f"is not an ISO time ({why})") from None
    if ts is pd.NaT:
        raise ValueError("is not an ISO time")
    if ts.tzinfo is None:
        raise ValueError("is a naive time: no UTC offset (e.g. 2026-01-05T10:00:00+00:00)")
    return value


IsoTime = Annotated[str, AfterValidator(check_iso_time)]
