"""The public face: ``flux``, ``flux.testing`` and ``flux.storage`` export sorted, documented names."""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any

import pytest

import flux
from flux import Clock, Storage
from flux.events import EVENT_TYPES

PUBLIC_MODULES = ["flux", "flux.testing", "flux.storage", "flux.observe"]
PROTOCOLS: list[type[Any]] = [Storage, Clock]
"""A class implementing one of these may leave its methods' docs to the protocol."""


def public_names(module: ModuleType) -> list[str]:
    return [name for name in module.__all__ if not name.startswith("__")]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_is_sorted_and_unique(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__ == sorted(module.__all__)
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_name_in_all_imports(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        namespace: dict[str, Any] = {}
        exec(f"from {module_name} import {name}", namespace)
        assert namespace[name] is getattr(module, name)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_module_has_a_docstring(module_name: str) -> None:
    assert (importlib.import_module(module_name).__doc__ or "").strip()


def _protocol_doc(cls: type[Any], attr: str) -> str | None:
    for protocol in PROTOCOLS:
        try:
            implements = issubclass(cls, protocol)
        except TypeError:
            implements = False
        if implements and hasattr(protocol, attr):
            return inspect.getdoc(getattr(protocol, attr))
    return None


def undocumented(module: ModuleType) -> list[str]:
    missing = []
    for name in public_names(module):
        obj = getattr(module, name)
        if not (getattr(obj, "__doc__", None) or "").strip():
            missing.append(name)
        if not inspect.isclass(obj):
            continue
        for attr, value in list(vars(obj).items()):
            if attr.startswith("_"):
                continue
            if not (callable(value) or isinstance(value, property | classmethod | staticmethod)):
                continue
            if not (inspect.getdoc(getattr(obj, attr)) or _protocol_doc(obj, attr)):
                missing.append(f"{name}.{attr}")
    return missing


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_and_method_has_a_docstring(module_name: str) -> None:
    assert undocumented(importlib.import_module(module_name)) == []


def test_version_is_a_string() -> None:
    assert isinstance(flux.__version__, str)
    assert "__version__" in flux.__all__


def test_event_classes_are_documented() -> None:
    assert sorted(EVENT_TYPES) == sorted(
        [
            "workflow_start",
            "workflow_complete",
            "workflow_error",
            "workflow_suspend",
            "workflow_resume",
            "workflow_cancel",
            "rollback_start",
            "rollback_complete",
            "step_start",
            "step_complete",
            "step_error",
            "step_retry",
            "step_skip",
            "step_suspend",
            "step_compensate",
            "signal_received",
        ]
    )
    for name, cls in EVENT_TYPES.items():
        assert cls.name == name
        assert (cls.__doc__ or "").strip(), name


def test_core_names_are_exported() -> None:
    """The names the Core issue promises are importable from the top level."""
    for name in [
        "FluxEngine",
        "InvalidInputError",
        "MemoryStorage",
        "NonRetryableError",
        "PlanError",
        "RetryAfter",
        "RetryPolicy",
        "RunNotFoundError",
        "RunResult",
        "StepContext",
        "Workflow",
        "WorkflowBuilder",
        "create_workflow",
        "is_retryable_error",
        "with_retry",
    ]:
        assert name in flux.__all__
    testing = importlib.import_module("flux.testing")
    assert {"EventRecorder", "FakeClock"} <= set(testing.__all__)
    assert "MemoryStorage" in importlib.import_module("flux.storage").__all__
