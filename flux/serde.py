"""JSON in and out: the only format flux stores (no pickle anywhere).

:func:`check_json` proves a value can be stored and names the offending key when it cannot.
:class:`InputCodec` turns a workflow's typed input (a dataclass, an attrs class, a TypedDict,
with enums and datetimes inside) into JSON and back, so a resumed run sees the same type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any, Generic, TypeVar

import cattrs

from flux.errors import InvalidInputError, SerializationError

T = TypeVar("T")
JSON = Any

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_loads = json.loads


def dumps(value: JSON) -> str:
    """Encode ``value`` as compact JSON text (raises ``TypeError``/``ValueError`` if impossible)."""
    return _dumps(value)


def loads(text: str) -> JSON:
    """Decode JSON text."""
    return _loads(text)


def copy_json(value: JSON) -> JSON:
    """A deep copy of a JSON value (fast paths for scalars)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _loads(_dumps(value))


def _find_bad(value: Any, path: str) -> tuple[str, str] | None:
    """The path and a description of the first part of ``value`` that is not JSON."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, f"the float {value!r} (JSON has no NaN/inf)")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (path, f"the non-string key {key!r}")
            found = _find_bad(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find_bad(item, f"{path}[{index}]")
            if found:
                return found
        return None
    return (path, f"a {type(value).__name__} object")


def check_json(value: JSON, where: str, *, step: str | None = None) -> None:
    """Raise :class:`SerializationError` unless ``value`` can be stored as JSON.

    ``where`` names the value for the message (``"output of step 'fetch'"``, ``"ctx.data"``...).
    """
    if value is None or isinstance(value, str | bool | int):
        return
    try:
        _dumps(value)
        bad = None
    except (TypeError, ValueError, OverflowError):
        bad = _find_bad(value, "")
        if bad is None:  # pragma: no cover - json refused something _find_bad accepts
            bad = ("", "a value json cannot encode")
    if bad is None:
        return
    path, what = bad
    raise SerializationError(
        f"{where}{path} is {what}, which cannot be stored: flux keeps only JSON values "
        "(dict with str keys, list, str, int, float, bool, None). Convert it first, for "
        "example to a dict, a str or an ISO date string.",
        step=step,
    )


def _strict(kind: type[Any], accepts: tuple[type[Any], ...]) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {kind.__name__}, got bool {value!r}")
        if not isinstance(value, accepts):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return kind(value)

    return structure


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_structure_hook(str, _strict(str, (str,)))
    conv.register_structure_hook(int, _strict(int, (int,)))
    conv.register_structure_hook(float, _strict(float, (int, float)))
    conv.register_structure_hook(bool, _strict(bool, (bool,)))
    for kind in (datetime, date, time):
        conv.register_unstructure_hook(kind, lambda v: v.isoformat())
        conv.register_structure_hook(kind, lambda v, k: v if isinstance(v, k) else k.fromisoformat(v))
    conv.register_unstructure_hook(timedelta, lambda v: v.total_seconds())
    conv.register_structure_hook(
        timedelta, lambda v, _: v if isinstance(v, timedelta) else timedelta(seconds=float(v))
    )
    return conv


_CONVERTER = _make_converter()


def _messages(exc: BaseException) -> list[str]:
    if isinstance(exc, cattrs.BaseValidationError):
        return cattrs.transform_error(exc, path="input")
    return [f"{type(exc).__name__}: {exc}"]


class InputCodec(Generic[T]):
    """Converts a workflow's input between its declared type ``T`` and JSON.

    With ``kind=None`` (no ``.input(T)`` on the builder) any JSON value is accepted as is.
    """

    def __init__(self, kind: type[T] | None, workflow: str) -> None:
        self.kind = kind
        self.workflow = workflow

    @property
    def type_name(self) -> str:
        """The declared input type's name, or ``"any JSON"``."""
        return getattr(self.kind, "__name__", repr(self.kind)) if self.kind else "any JSON"

    def accept(self, value: Any) -> tuple[T, JSON]:
        """Check a caller's input: returns the typed value and its JSON form.

        Raises:
            InvalidInputError: ``value`` is neither a ``T`` nor a dict of ``T``'s fields, or
                it holds something JSON cannot store.
        """
        if self.kind is None:
            try:
                check_json(value, "the input")
            except SerializationError as exc:
                raise InvalidInputError(f"invalid input for workflow {self.workflow!r}: {exc}") from None
            return value, copy_json(value)
        typed = self._typed(value)
        try:
            raw = _CONVERTER.unstructure(typed, self.kind)
            check_json(raw, "the input")
        except (SerializationError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"invalid input for workflow {self.workflow!r}: {exc}") from None
        return typed, raw

    def restore(self, raw: JSON) -> T:
        """Rebuild the typed input from its stored JSON form."""
        if self.kind is None:
            return raw  # type: ignore[no-any-return]
        return _CONVERTER.structure(copy_json(raw), self.kind)

    def _typed(self, value: Any) -> T:
        assert self.kind is not None
        if not isinstance(value, dict):
            try:
                if isinstance(value, self.kind):
                    return value
            except TypeError:  # TypedDicts and generics refuse isinstance
                pass
            raise InvalidInputError(
                f"invalid input for workflow {self.workflow!r}: expected a {self.type_name} or a "
                f"dict of its fields, got {type(value).__name__} {value!r}"
            )
        try:
            return _CONVERTER.structure(value, self.kind)
        except Exception as exc:
            details = "; ".join(_messages(exc))
            raise InvalidInputError(
                f"invalid input for workflow {self.workflow!r} (expects {self.type_name}): "
                f"{details}. Pass a {self.type_name} or a dict with its fields."
            ) from None
