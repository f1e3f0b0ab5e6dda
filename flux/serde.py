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
import cattrs.cols

from flux.errors import InvalidInputError, SerializationError

T = TypeVar("T")
JSON = Any

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_loads = json.loads


def _make_dumps() -> Callable[[JSON], str]:
    """Compact JSON encoding. ``JSONEncoder.encode`` builds a new C encoder for every call,
    which costs as much as encoding a small value: build one once and keep it. Without
    ``markers`` it does not look for cycles (a cycle raises RecursionError)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - Pythons without the C accelerator
        return _ENCODER.encode
    encode = make(None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False)

    def dumps(value: JSON) -> str:
        return "".join(encode(value, 0))

    return dumps


_dumps = _make_dumps()


def dumps(value: JSON) -> str:
    """Encode ``value`` as compact JSON text.

    Raises:
        TypeError, ValueError: ``value`` holds something JSON cannot encode (or NaN/infinity).
        RecursionError: ``value`` contains itself (or is nested too deeply).
    """
    return _dumps(value)


def loads(text: str) -> JSON:
    """Decode JSON text."""
    return _loads(text)


SHARED = frozenset({str, int, float, bool, type(None)})
"""The immutable JSON types (exact types, not subclasses): a copy shares them."""


def copy_json(value: JSON) -> JSON:
    """A deep copy of a JSON value, made structurally: dicts and lists are copied, scalars shared.

    Anything else (a tuple, an enum, a dict with a non-str key) is copied through a JSON encode
    and decode, so the copy is what a JSON store would give back (a tuple becomes a list).
    """
    kind = type(value)
    if kind in SHARED:
        return value
    if kind is dict:
        copy = value.copy()  # then replace what is not shared (same size: safe while iterating)
        for key, item in copy.items():
            if type(key) is not str:
                return _loads(_dumps(value))
            if type(item) not in SHARED:
                copy[key] = copy_json(item)
        return copy
    if kind is list:
        return [item if type(item) in SHARED else copy_json(item) for item in value]
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


def _is_json(value: Any) -> bool:
    """True when ``value`` holds only JSON types (str keys, finite floats); fast on exact types."""
    kind = type(value)
    if kind in SHARED:
        return kind is not float or math.isfinite(value)
    if kind is dict:
        for key, item in value.items():
            if not isinstance(key, str):
                return False
            if (type(item) not in SHARED or type(item) is float) and not _is_json(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_is_json(item) for item in value if type(item) not in SHARED or type(item) is float)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(isinstance(key, str) for key in value) and all(map(_is_json, value.values()))
    if isinstance(value, list | tuple):
        return all(map(_is_json, value))
    return isinstance(value, str | int)  # str and int subclasses (enums)


def check_json(value: JSON, where: str, *, step: str | None = None) -> None:
    """Raise :class:`SerializationError` unless ``value`` can be stored as JSON.

    ``where`` names the value for the message (``"output of step 'fetch'"``, ``"ctx.data"``...).
    """
    if value is None or isinstance(value, str | bool | int):
        return
    try:
        # json.dumps would quietly turn non-str keys ({1: "a"}) into strings: walk instead.
        if _is_json(value):
            return
        bad = _find_bad(value, "")
    except RecursionError:
        bad = ("", "nested too deeply (or it contains itself)")
    if bad is None:  # pragma: no cover - _is_json refused something _find_bad accepts
        bad = ("", "a value json cannot encode")
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


def _make_converter(*, forbid_extra_keys: bool = False) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=forbid_extra_keys)
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
    conv.register_structure_hook_factory(cattrs.cols.is_sequence, lambda kind: _no_text(kind, conv))
    return conv


def _no_text(kind: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Structure lists and tuples, but refuse a str, bytes or dict (cattrs would iterate them)."""
    tuple_like = (getattr(kind, "__origin__", None) or kind) is tuple
    cols = cattrs.cols
    make = cols.homogenous_tuple_structure_factory if tuple_like else cols.list_structure_factory
    inner = make(kind, conv)

    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, str | bytes | dict):
            raise TypeError(f"expected a list, got {type(value).__name__} {value!r}")
        return inner(value, kind)

    return structure


_CONVERTER = _make_converter()
_STRICT = _make_converter(forbid_extra_keys=True)
"""Checks callers' input: a field the type does not have is a mistake. Stored inputs are
restored leniently, so a run survives a field's removal from its input type."""


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
            if not isinstance(value, dict):  # an instance may hold wrongly typed fields
                _STRICT.structure(copy_json(raw), self.kind)  # what a resume will have to do
        except Exception as exc:
            details = "; ".join(_messages(exc))
            raise InvalidInputError(
                f"invalid input for workflow {self.workflow!r} (expects {self.type_name}): {details}"
            ) from None
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
            return _STRICT.structure(value, self.kind)
        except Exception as exc:
            details = "; ".join(_messages(exc))
            raise InvalidInputError(
                f"invalid input for workflow {self.workflow!r} (expects {self.type_name}): "
                f"{details}. Pass a {self.type_name} or a dict with its fields."
            ) from None
