"""Run labels: short ``str -> str`` tags (tenant, source, ...) stored with a run.

Labels are set when a run starts (``execute``/``start(..., labels={...})``), returned on
``RunResult.labels``, filterable with ``engine.list(labels=...)`` and ``flux list --label k=v``,
and copied to child runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flux.errors import InvalidInputError

MAX_LABELS = 64
MAX_VALUE = 256
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}")


def check_labels(labels: Any) -> dict[str, str]:
    """A fresh dict of ``labels`` once every key and value is valid.

    Keys are 1 to 63 characters: a letter or digit, then letters, digits, ``_ . - /``. Values
    are strings of at most 256 characters. At most 64 labels per run.

    >>> check_labels({"tenant": "acme"})
    {'tenant': 'acme'}

    Raises:
        InvalidInputError: ``labels`` is not a mapping, or a key or value is not valid.
    """
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise InvalidInputError(
            f"labels must be a dict of str to str, got {type(labels).__name__}; "
            'for example labels={"tenant": "acme"}'
        )
    if len(labels) > MAX_LABELS:
        raise InvalidInputError(f"a run takes at most {MAX_LABELS} labels, got {len(labels)}")
    checked: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise InvalidInputError(
                f"label key {key!r} is not valid: use 1 to 63 letters, digits and _ . - / "
                "starting with a letter or digit (for example 'tenant' or 'app.kubernetes.io/name')"
            )
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise InvalidInputError(
                f"label {key!r} has value {value!r:.80}; label values are strings of at most "
                f"{MAX_VALUE} characters (convert numbers with str())"
            )
        checked[key] = value
    return checked
