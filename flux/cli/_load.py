"""Finding what the command line names: workflows (``MODULE:ATTRIBUTE`` or a name among an
app's ``workflows = [...]``), runs, steps and JSON arguments. Every failure is a
:class:`CliError` with one line that says what to do."""

from __future__ import annotations

import difflib
import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from flux.builder import WorkflowBuilder
from flux.errors import PlanError
from flux.plan import Workflow


class CliError(Exception):
    """Bad input on the command line: printed as one line on stderr, exit code 2."""


def close(word: str, choices: Iterable[str], *, what: str) -> str:
    """``"; did you mean: a, b?"`` for the choices close to ``word``, else the known ones."""
    options = sorted(set(choices))
    near = difflib.get_close_matches(word, options, n=3, cutoff=0.5)
    containing = [o for o in options if word and word in o and o not in near]
    near += containing[: 3 - len(near)]
    if near:
        return f"; did you mean: {', '.join(near)}?"
    if options:
        shown = ", ".join(options[:10]) + (", ..." if len(options) > 10 else "")
        return f"; known {what}: {shown}"
    return ""


def import_module(name: str) -> ModuleType:
    """Import ``name`` with the current directory on ``sys.path`` (as ``python -m`` does)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            # Close matches among the modules of the current directory and PYTHONPATH.
            places = [cwd, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
            local = [m.name for m in pkgutil.iter_modules(places)]
            near = difflib.get_close_matches(name, local, n=3, cutoff=0.6)
            hint = f"; did you mean: {', '.join(near)}?" if near else " (check the name and PYTHONPATH)"
            raise CliError(
                f"cannot import module {name!r}: no module named {exc.name!r} in {cwd} or sys.path{hint}"
            ) from exc
        raise CliError(f"module {name!r} failed to import: {exc} (install what it needs)") from exc
    except Exception as exc:
        raise CliError(
            f"module {name!r} failed to import: {type(exc).__name__}: {exc} (flux -v shows the traceback)"
        ) from exc


def as_workflow(value: Any, where: str) -> Workflow[Any]:
    """``value`` as a built plan: a ``Workflow``, or a builder (built here)."""
    if isinstance(value, Workflow):
        return value
    if isinstance(value, WorkflowBuilder):
        try:
            return value.build()
        except PlanError as exc:
            raise CliError(f"{where} does not build: {exc}") from exc
    raise CliError(
        f"{where} is a {type(value).__name__}, not a workflow; point at a Workflow or a builder "
        "from create_workflow(...)"
    )


def app_workflows(app: str) -> dict[str, Workflow[Any]]:
    """The workflows module ``app`` lists in ``workflows = [...]``, by name."""
    module = import_module(app)
    listed = getattr(module, "workflows", None)
    if listed is None:
        raise CliError(
            f"module {app!r} has no `workflows` list; add `workflows = [my_flow, ...]` to it, or name "
            "a workflow as MODULE:ATTRIBUTE"
        )
    if not isinstance(listed, list | tuple):
        raise CliError(f"{app}.workflows is a {type(listed).__name__}; make it a list of workflows")
    plans = [as_workflow(item, f"{app}.workflows[{i}]") for i, item in enumerate(listed)]
    return {plan.name: plan for plan in plans}


def load_workflow(spec: str, app: str | None) -> Workflow[Any]:
    """The workflow ``spec`` names: ``MODULE:ATTRIBUTE``, or a name among ``app``'s workflows."""
    module_name, colon, attribute = spec.partition(":")
    if colon:
        if not module_name or not attribute:
            raise CliError(f"{spec!r} is not MODULE:ATTRIBUTE; write for example myapp.flows:order_flow")
        module = import_module(module_name)
        value: Any = module
        for part in attribute.split("."):
            if not hasattr(value, part):
                found = [n for n, v in vars(module).items() if isinstance(v, Workflow | WorkflowBuilder)]
                hint = close(attribute, found, what="workflows")
                raise CliError(f"module {module_name!r} has no attribute {attribute!r}{hint}")
            value = getattr(value, part)
        return as_workflow(value, spec)
    if app is None:
        raise CliError(
            f"workflow {spec!r} is not MODULE:ATTRIBUTE; write for example myapp:order_flow, or pass "
            "--app MODULE to look it up by name"
        )
    plans = app_workflows(app)
    if spec not in plans:
        hint = close(spec, plans, what="workflows")
        raise CliError(f"{app}.workflows has no workflow named {spec!r}{hint}")
    return plans[spec]


def parse_json(text: str, what: str) -> Any:
    """A JSON argument; ``@path`` reads the file at ``path``."""
    source = what
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read {what} from {path}: {exc.strerror or exc}") from exc
        source = f"{what} in {path}"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{source} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            """quote it for the shell, e.g. --input '{"order_id": "123"}'"""
        ) from exc
