"""One line per refusal: the innermost cause of a failed Dagster run, or of refused run config.

A job run in process (``execute_in_process(raise_on_error=False)``) that fails carries its
errors as nested :class:`~dagster._utils.error.SerializableErrorInfo` (``Error occurred while
executing op "champion_models":`` caused by ... caused by the real error); config that
Dagster's schema refuses raises :class:`~dagster.DagsterInvalidConfigError` before any run
exists. The commands (``make paper``, the operator CLI) print what these functions return:
one line naming the field and the value where the error does.

* :func:`run_failure_line`: a failed result -> ``"<op>: <innermost cause>"`` (each distinct
  step's cause, ``; ``-joined), ``""`` for a successful one.
* :func:`config_error_line`: a :class:`DagsterInvalidConfigError` -> ``"<path>: <what>"``
  per error, e.g. ``ops.rollback.config.trigger: 'automatic' is not one of auto, manual``.
* :func:`error_info_line` / :func:`message_line`: the same for one error / one message.

Pydantic's multi-line validation errors (``1 validation error for RollbackConfig`` / field /
``Input should be ...``) become ``"<field>: <value> <message>"``.
"""

import re
from typing import Any

_PYDANTIC_HEAD = re.compile(r"^\d+ validation errors? for \w+$")
_PYDANTIC_MSG = re.compile(
    r"^\s+(?P<msg>.*?) \[type=[^,\]]+(?:, input_value=(?P<value>.*?))?(?:, input_type=\w+)?\]$"
)
_CLASS_PREFIX = re.compile(r"^(?:[A-Za-z_][\w]*\.)*(?P<cls>[A-Za-z_]\w*): (?P<rest>.*)$", re.S)
_ENUM = re.compile(r"Value at path (?P<path>\S+) not in enum type (?P<enum>.+?) got (?P<value>.*)$")


def _pydantic_lines(text: str) -> list[str] | None:
    """``"<field>: <value> <message>"`` per error of a pydantic ValidationError's text, or
    None when ``text`` is not one."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not _PYDANTIC_HEAD.match(lines[0].strip()):
        return None
    out, field = [], ""
    for ln in lines[1:]:
        m = _PYDANTIC_MSG.match(ln)
        if m:
            msg = m["msg"].removeprefix("Value error, ")
            if msg.startswith(f"{field}:"):  # our validators name the field and the value
                out.append(msg)
            elif m["value"] is None:
                out.append(f"{field}: {msg}")
            else:
                out.append(f"{field}: {m['value']} {msg}")
        elif not ln.startswith(" "):
            field = ln.strip()
    return out or None


def message_line(text: str) -> str:
    """One line of an error message: pydantic's errors as ``field: value message``, else the
    message without its exception class prefix, its first non-empty line."""
    text = text.strip()
    m = _CLASS_PREFIX.match(text)
    if m and ("Error" in m["cls"] or m["cls"] in ("Failure", "Exception")):
        text = m["rest"].strip()
    pyd = _pydantic_lines(text)
    if pyd:
        return "; ".join(pyd)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else ""


def error_info_line(err: Any) -> str:
    """The innermost cause of a SerializableErrorInfo (its ``cause`` chain, then its
    ``context`` chain), as :func:`message_line`."""
    while getattr(err, "cause", None) is not None or getattr(err, "context", None) is not None:
        err = err.cause if err.cause is not None else err.context
    return message_line(err.message)


def run_failure_line(result: Any) -> str:
    """``""`` for a successful in-process result; else the innermost cause of each failed
    step, ``"<step>: <cause>"``, distinct ones ``; ``-joined (the run's own failure when no
    step failed, e.g. a resource that did not initialise)."""
    if result.success:
        return ""
    parts: list[str] = []
    for event in result.all_events:
        err = getattr(event.event_specific_data, "error", None)
        if err is None:
            continue
        step = event.step_key
        line = error_info_line(err)
        named = not step or line.startswith(step) or line.split(":")[0].endswith("_job")
        text = line if named else f"{step}: {line}"
        if line and text not in parts and not any(p.endswith(f": {line}") for p in parts):
            parts.append(text)
    return "; ".join(parts) or f"run {result.run_id} failed"


def config_error_line(exc: Exception) -> str:
    """One line of a :class:`~dagster.DagsterInvalidConfigError` (or any exception): per
    config error, ``<path>: <what>`` with the path dotted (``ops.rollback.config.trigger``)."""
    errors = getattr(exc, "errors", None)
    if not errors:
        return message_line(f"{type(exc).__name__}: {exc}")
    parts = []
    for e in errors:
        msg = " ".join(str(e.message).split())
        m = _ENUM.search(msg)
        if m:
            path = m["path"].removeprefix("root:").replace(":", ".")
            allowed = _enum_values(e)
            parts.append(
                f"{path}: {m['value']!r} is not one of {', '.join(map(repr, allowed))}"
                if allowed
                else f"{path}: {m['value']!r} is not allowed ({m['enum']})"
            )
        else:
            parts.append(msg)
    return "invalid run config: " + "; ".join(parts)


def _enum_values(error: Any) -> list[str]:
    """The allowed values of an enum config error (Dagster's ``error_data.config_type_snap``)."""
    snap = getattr(getattr(error, "error_data", None), "config_type_snap", None)
    values = getattr(snap, "enum_values", None) or []
    return [str(v.value) for v in values]
