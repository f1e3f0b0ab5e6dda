"""Mermaid drawings of plans (``Workflow.to_mermaid``).

Shapes: steps are boxes, commit steps double boxes, waits for signals hexagons, sleeps rounded
boxes, maps parallelograms, child workflows flags, branch decisions diamonds. A parallel group
is a subgraph holding one subgraph per branch; a branch's cases are subgraphs reached by edges
labelled with their keys. Dependencies are plain edges, ``on_failure`` routes dotted edges
labelled ``on failure``, declared ``goto`` targets dotted edges labelled ``goto``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from flux.constructs import BranchSpec, ChildSpec, ParallelSpec

if TYPE_CHECKING:
    from flux._shape import PlanShape
    from flux._spec import StepSpec

_SHAPES = {
    "step": '["{}"]',
    "commit": '[["{}"]]',
    "wait": '{{{{"{}"}}}}',
    "sleep": '(["{}"])',
    "map": '[/"{}"/]',
    "child": '>"{}"]',
    "branch": '{{"{}"}}',
}


class _Drawing:
    def __init__(self) -> None:
        self.lines = ["flowchart TD", "    start((start))"]
        self.ids: dict[str, str] = {}
        self.count = 0
        self.routes: list[tuple[str, str, str]] = []
        self.groups: set[str] = set()

    def node_id(self, name: str) -> str:
        if name not in self.ids:
            self.ids[name] = f"s{self.count}"
            self.count += 1
        return self.ids[name]

    def edge(self, source: str, target: str, spec: StepSpec | None = None, label: str | None = None) -> None:
        if label is not None:
            self.lines.append(f'    {source} -- "{_text(label)}" --> {target}')
        elif spec is not None and spec.when is not None:
            self.lines.append(f"    {source} -. when .-> {target}")
        else:
            self.lines.append(f"    {source} --> {target}")

    def step(self, spec: StepSpec, indent: str) -> tuple[str, list[str]]:
        """Draw one step; returns its entry node and its exit nodes."""
        node = self.node_id(spec.name)
        construct = spec.construct
        if isinstance(construct, ParallelSpec):
            return self._parallel(spec, construct, indent)
        shape = _SHAPES.get(spec.kind, _SHAPES["step"])
        label = (
            spec.name if not isinstance(construct, ChildSpec) else f"{spec.name}: {construct.workflow_name}"
        )
        if spec.kind == "map":
            label = f"map {spec.name}"
        self.lines.append(f"{indent}{node}{shape.format(_text(label))}")
        if isinstance(construct, BranchSpec):
            exits: list[str] = []
            for label, chain in construct.chains():
                sub = f"{node}_{_slug(label)}"
                self.lines.append(f'{indent}subgraph {sub} ["{_text(label)}"]')
                entry, ends = self.chain(chain.steps, indent + "    ")
                self.lines.append(f"{indent}end")
                self.edge(node, entry, label=label)
                exits.extend(ends)
            return node, exits
        return node, [node]

    def _parallel(self, spec: StepSpec, group: ParallelSpec, indent: str) -> tuple[str, list[str]]:
        node = self.node_id(spec.name)
        fork, join = f"{node}_fork", f"{node}_join"
        self.groups.add(node)
        self.lines.append(f'{indent}subgraph {node} ["parallel {_text(spec.name)}"]')
        self.lines.append(f'{indent}    {fork}[" "]')
        exits: list[str] = []
        for chain in group.branches:
            sub = f"{node}_{_slug(chain.name)}"
            self.lines.append(f'{indent}    subgraph {sub} ["{_text(chain.name)}"]')
            entry, ends = self.chain(chain.steps, indent + "        ")
            self.lines.append(f"{indent}    end")
            self.edge(fork, entry)
            exits.extend(ends)
        self.lines.append(f'{indent}    {join}[" "]')
        self.lines.append(f"{indent}end")
        for end in exits:
            self.edge(end, join)
        return fork, [join]

    def chain(self, steps: tuple[StepSpec, ...], indent: str) -> tuple[str, list[str]]:
        """Draw a chain in order; returns its entry node and exit nodes."""
        handlers = {s.on_failure for s in steps if s.on_failure is not None}
        entry: str | None = None
        previous: list[str] = []
        for spec in steps:
            first, ends = self.step(spec, indent)
            self._routes(spec)
            if spec.name in handlers:
                continue  # reached by its failure route only
            if entry is None:
                entry = first
            for source in previous:
                self.edge(source, first, spec)
            previous = ends
        assert entry is not None
        return entry, previous

    def _routes(self, spec: StepSpec) -> None:
        source = self.ids[spec.name]
        if spec.on_failure is not None:
            self.routes.append((source, spec.on_failure, "on failure"))
        for target in spec.goto or ():
            self.routes.append((source, target, "goto"))

    def finish_routes(self) -> None:
        for source, target, label in self.routes:
            node = self.ids[target]
            entry = f"{node}_fork" if node in self.groups else node
            exit_ = f"{source}_join" if source in self.groups else source
            self.lines.append(f"    {exit_} -. {label} .-> {entry}")


def draw(steps: Sequence[StepSpec], shape: PlanShape) -> str:
    """A plan (its top-level steps and its shape) as a Mermaid flowchart."""
    if shape.plain and all(spec.kind != "child" for spec in steps):
        return _draw_line(steps)
    drawing = _Drawing()
    if shape.deps is None:
        entry, exits = drawing.chain(tuple(steps), "    ")
        drawing.edge("start", entry, steps[0])
    else:
        nodes: dict[str, tuple[str, list[str]]] = {}
        for spec in steps:
            nodes[spec.name] = drawing.step(spec, "    ")
            drawing._routes(spec)
        top = shape.chain()
        exits = []
        for spec in steps:
            if spec.name in top.handlers:
                continue
            needs = shape.deps[spec.name]
            if not needs:
                drawing.edge("start", nodes[spec.name][0], spec)
            for need in needs:
                for source in nodes[need][1]:
                    drawing.edge(source, nodes[spec.name][0], spec)
            if not shape.dependents.get(spec.name):
                exits.extend(nodes[spec.name][1])
            if spec.on_failure is not None:  # the recovery step stands in for the step
                for dependent in shape.dependents.get(spec.name, ()):
                    for source in nodes[spec.on_failure][1]:
                        drawing.edge(source, nodes[dependent][0])
    drawing.finish_routes()
    drawing.lines.append("    done((end))")
    for source in exits:
        drawing.lines.append(f"    {source} --> done")
    return "\n".join(drawing.lines)


def _draw_line(steps: Sequence[StepSpec]) -> str:
    """A straight chain of steps, commits, waits and sleeps."""
    lines = ["flowchart TD", "    start((start))"]
    previous = "start"
    for i, spec in enumerate(steps):
        node = f"s{i}"
        lines.append(f"    {node}{_SHAPES[spec.kind].format(_text(spec.name))}")
        edge = " -. when .-> " if spec.when is not None else " --> "
        lines.append(f"    {previous}{edge}{node}")
        previous = node
    lines.append("    done((end))")
    lines.append(f"    {previous} --> done")
    return "\n".join(lines)


def _text(label: str) -> str:
    return label.replace('"', "'")


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)
