"""Limits on a job's ``metadata`` (free JSON the platform gets back in events and webhooks).

Checked at enqueue, before anything is stored, so a hostile value is that job's error rather than
a database failure of the whole batch: PostgreSQL's jsonb refuses NUL characters, the JSON
encoder refuses very deep nesting and integers beyond 64 bits. The walk is iterative, so its
cost is bounded by the size of the value and never by Python's recursion limit.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.errors import JobValidationError

MAX_METADATA_DEPTH = 16  # nested objects/arrays
MAX_METADATA_BYTES = 16 * 1024  # encoded as JSON
_INT64 = (-(2**63), 2**63 - 1)


def _bad_string(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (a lone surrogate)"
    return None


def _check_scalar(value: Any, where: str) -> None:
    if isinstance(value, str):
        problem = _bad_string(value)
        if problem:
            raise JobValidationError(f"metadata: {where} {problem}")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not _INT64[0] <= value <= _INT64[1]:
            raise JobValidationError(f"metadata: {where} is an integer beyond 64 bits")
    elif isinstance(value, float) and value != value:  # NaN
        raise JobValidationError(f"metadata: {where} is not a number")


def check_metadata(metadata: dict[str, Any], field: str = "metadata") -> None:
    """Raise :class:`JobValidationError` when ``metadata`` cannot be stored and sent back.

    ``field`` names the job field in the error (``variables`` are held to the same limits).
    """
    try:
        _check_tree(metadata)
    except JobValidationError as exc:
        if field == "metadata":
            raise
        raise JobValidationError(
            field + exc.message.removeprefix("metadata"), hint=exc.hint
        ) from None


def _check_tree(metadata: dict[str, Any]) -> None:
    stack: list[tuple[Any, int, str]] = [(metadata, 1, "$")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_METADATA_DEPTH:
                raise JobValidationError(
                    f"metadata: nested deeper than {MAX_METADATA_DEPTH} levels at {where}"
                )
            if isinstance(value, dict):
                for key, item in value.items():
                    problem = _bad_string(key)
                    if problem:
                        raise JobValidationError(f"metadata: a key in {where} {problem}")
                    stack.append((item, depth + 1, f"{where}.{key[:40]}"))
            else:
                stack.extend((item, depth + 1, f"{where}[{i}]") for i, item in enumerate(value))
        else:
            _check_scalar(value, where)
    size = len(msgspec.json.encode(metadata))
    if size > MAX_METADATA_BYTES:
        raise JobValidationError(
            f"metadata: {size} bytes as JSON, over the limit of {MAX_METADATA_BYTES}",
            hint="keep large data on the platform and put its id in metadata",
        )
