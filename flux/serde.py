"""JSON in and out: the only format flux stores (no pickle anywhere).

:func:`check_json` proves a value can be stored and names the offending key when it cannot.
:class:`InputCodec` turns a workflow's typed input (a dataclass, an attrs class, a TypedDict,
with enums and datetimes inside) into JSON and back, so a resumed run sees the same type.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any, Generic, TypeVar

import attrs
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


def a_or_an(noun: str) -> str:
    """``noun`` with its indefinite article, by its first letter: ``"an Order"``, ``"a Ticket"``."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


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


class _NotPlain(Exception):
    """Raised by ``_plain_copy``: the value needs the careful path (``check_json``)."""


def _plain_copy(value: Any) -> Any:
    """A deep copy of ``value`` if it is made of exact JSON types that storage can hold (str
    keys, valid text, finite floats, ints within the digit limit); else raises ``_NotPlain``.

    Checks and copies in one walk, scalars inline: it runs on every step's data and output.
    """
    kind = type(value)
    if kind is dict:
        copy = {}
        for key, item in value.items():
            if type(key) is not str or not (key.isascii() or _utf8(key)):
                raise _NotPlain
            kind = type(item)
            if kind is str:
                if not (item.isascii() or _utf8(item)):
                    raise _NotPlain
            elif kind is int:
                if item.bit_length() > _SAFE_BITS:
                    raise _NotPlain
            elif kind is float:
                if not math.isfinite(item):
                    raise _NotPlain
            elif kind is not bool and item is not None:
                item = _plain_copy(item)
            copy[key] = item
        return copy
    if kind is list:
        return [item if type(item) in _TEXTLESS else _plain_copy(item) for item in value]
    if kind is str:
        if value.isascii() or _utf8(value):
            return value
    elif kind is int:
        if value.bit_length() <= _SAFE_BITS:
            return value
    elif kind is float:
        if math.isfinite(value):
            return value
    elif kind is bool or value is None:
        return value
    raise _NotPlain


_TEXTLESS = frozenset({bool, type(None)})  # scalars a list item needs no check for


def copy_checked(value: JSON, check: Callable[[], None]) -> JSON:
    """``copy_json(value)``, once ``value`` is known to be storable: in one walk when it is
    made of plain JSON types (the usual case), else after ``check()`` (which raises
    :class:`SerializationError` naming what is wrong, see :func:`check_json`)."""
    try:
        return _plain_copy(value)
    except (_NotPlain, RecursionError):
        check()
        return copy_json(value)


def _utf8(text: str) -> bool:
    """True when ``text`` encodes as UTF-8 (no lone surrogates, which no database stores)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_DIGITS = sys.get_int_max_str_digits()
_SAFE_BITS = int(_DIGITS * 3.32) - 8 if _DIGITS else sys.maxsize  # fewer bits: fewer digits


def _int_ok(value: int) -> bool:
    """True when ``value`` can be written as text (Python refuses ints over its digit limit)."""
    if value.bit_length() <= _SAFE_BITS:
        return True
    try:
        str(value)
    except ValueError:
        return False
    return True


def valid_text(value: str) -> bool:
    """True when ``value`` is valid Unicode text (no lone surrogate), which storage can hold."""
    return value.isascii() or _utf8(value)


def _bad_scalar(value: Any) -> str | None:
    """A description of a str or int that cannot be stored, else None."""
    if isinstance(value, str) and not valid_text(value):
        return f"a str with a lone surrogate ({value!r}), which is not valid Unicode text"
    if isinstance(value, int) and not isinstance(value, bool) and not _int_ok(value):
        return f"an int with more than {_DIGITS} digits (Python's limit for writing it as text)"
    return None


def _find_bad(value: Any, path: str) -> tuple[str, str] | None:
    """The path and a description of the first part of ``value`` that is not JSON."""
    if value is None or isinstance(value, str | bool | int):
        bad = _bad_scalar(value)
        return None if bad is None else (path, bad)
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, f"the float {value!r} (JSON has no NaN/inf)")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (path, f"the non-string key {key!r}")
            if not valid_text(key):
                return (path, f"the key {key!r}, a str with a lone surrogate (not valid Unicode text)")
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
    return (path, f"{a_or_an(type(value).__name__)} object")


def _is_json(value: Any) -> bool:
    """True when ``value`` holds only JSON that storage can hold (str keys, valid Unicode text,
    finite floats, ints within Python's digit limit); fast on exact types."""
    kind = type(value)
    if kind is str:
        return value.isascii() or _utf8(value)
    if kind is int:
        return value.bit_length() <= _SAFE_BITS or _int_ok(value)
    if kind is float:
        return math.isfinite(value)
    if kind is bool or value is None:
        return True
    if kind is dict:
        for key, item in value.items():
            if not (type(key) is str and key.isascii()) and not (isinstance(key, str) and valid_text(key)):
                return False
            if type(item) is str:
                if not item.isascii() and not _utf8(item):
                    return False
            elif type(item) is not bool and item is not None and not _is_json(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_is_json(item) for item in value if type(item) is not bool and item is not None)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and valid_text(key) for key in value) and all(
            map(_is_json, value.values())
        )
    if isinstance(value, list | tuple):
        return all(map(_is_json, value))
    return isinstance(value, str | int) and _bad_scalar(value) is None  # subclasses (enums)


def check_json(value: JSON, where: str, *, step: str | None = None) -> None:
    """Raise :class:`SerializationError` unless ``value`` can be stored as JSON.

    Refused besides non-JSON types: NaN and infinity, non-str keys, strs holding lone
    surrogates and ints longer than Python's str-conversion digit limit (no backend can store
    them). ``where`` names the value for the message (``"output of step 'fetch'"``,
    ``"ctx.data"``...).
    """
    if value is None or value is True or value is False:
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
                raise InvalidInputError(self._untyped_message(value, exc)) from None
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

    def _untyped_message(self, value: Any, exc: SerializationError) -> str:
        """Why an input that is not JSON was refused by a workflow without ``.input(T)``."""
        kind = type(value)
        if dataclasses.is_dataclass(kind) or attrs.has(kind):
            name = kind.__name__
            return (
                f"invalid input for workflow {self.workflow!r}: got {a_or_an(name)}, but the workflow "
                f"declares no input type. Declare it with create_workflow({self.workflow!r}).input({name}) "
                f"and handlers get {a_or_an(name)} as ctx.input (execute then also accepts a dict of its "
                "fields); or pass a dict."
            )
        hint = (
            " If this dict is a TypedDict, declare it with .input(T): a typed input stores dates, "
            "datetimes and enums as JSON and gives them back to handlers as they were."
            if isinstance(value, dict)
            else ""
        )
        return f"invalid input for workflow {self.workflow!r}: {exc}{hint}"

    def restore(self, raw: JSON) -> T:
        """Rebuild the typed input from its stored JSON form.

        Raises:
            InvalidInputError: the stored input no longer fits the type (a field was added
                or changed since the run started); the message names the field.
        """
        if self.kind is None:
            return raw  # type: ignore[no-any-return]
        try:
            return _CONVERTER.structure(copy_json(raw), self.kind)
        except Exception as exc:
            details = "; ".join(_messages(exc))
            raise InvalidInputError(
                f"the stored input of a run of workflow {self.workflow!r} no longer fits "
                f"{self.type_name}: {details}. The input type changed since the run started: "
                "give new fields defaults, or register the old workflow version."
            ) from None

    def _typed(self, value: Any) -> T:
        assert self.kind is not None
        if not isinstance(value, dict):
            try:
                if isinstance(value, self.kind):
                    return value
            except TypeError:  # TypedDicts and generics refuse isinstance
                pass
            raise InvalidInputError(
                f"invalid input for workflow {self.workflow!r}: expected {a_or_an(self.type_name)} or a "
                f"dict of its fields, got {type(value).__name__} {value!r}"
            )
        try:
            return _STRICT.structure(value, self.kind)
        except Exception as exc:
            details = "; ".join(_messages(exc))
            raise InvalidInputError(
                f"invalid input for workflow {self.workflow!r} (expects {self.type_name}): "
                f"{details}. Pass {a_or_an(self.type_name)} or a dict with its fields."
            ) from None
