"""The public face: ``flux`` and its public modules export sorted, documented names."""

from __future__ import annotations

import ast
import importlib
import inspect
import typing
from types import ModuleType
from typing import Any

import pytest

import flux
from flux import Clock, Storage
from flux.events import EVENT_TYPES

PUBLIC_MODULES = [
    "flux", "flux.testing", "flux.storage", "flux.events", "flux.patterns", "flux.metrics", "flux.observe",
    "flux.server",
]  # fmt: skip
DEFINING_MODULES = ["flux.events", "flux.patterns", "flux.metrics"]
"""Modules whose ``__all__`` lists every public name they define."""
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
        if typing.get_origin(obj) is not None:
            continue  # a type alias (Literal, Callable, union): documented in the reference
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


def defined_names(module: ModuleType) -> set[str]:
    """Public classes, functions and constants a module defines (type variables and loggers aside)."""
    tree = ast.parse(inspect.getsource(module))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            value = node.value
            if isinstance(value, ast.Call) and ast.unparse(value.func) in {"TypeVar", "logging.getLogger"}:
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {name for name in names if not name.startswith("_")}


@pytest.mark.parametrize("module_name", DEFINING_MODULES)
def test_all_lists_every_public_name_the_module_defines(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert set(module.__all__) == defined_names(module)


def test_metrics_is_a_module_and_run_metrics_its_function() -> None:
    """``import flux.metrics`` gives the module; no public name ``flux.metrics`` is a function."""
    module = importlib.import_module("flux.metrics")
    assert isinstance(module, ModuleType)
    assert flux.metrics is module
    assert flux.run_metrics is module.run_metrics
    assert "metrics" not in flux.__all__


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
