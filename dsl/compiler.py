"""Checked AST -> plan: the tree of leaf and derived nodes.

A leaf reads events (latest_event_to_state, has_existed, has_existed_within);
a derived node reads other nodes. Node ids are readable and stable: the
operator's rule name and a hash of its canonical text, so the same
sub-expression always gets the same id and is computed once.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict

from timeline.dsl import ast as A
from timeline.dsl.ast import Kind
from timeline.dsl.checker import Checked, typecheck
from timeline.dsl.parser import parse

# Derived from each AST class's declaration: a leaf reads events, a derived node reads timelines.
LEAF_OPERATORS = tuple(c for c in A.OPERATOR_CLASSES if c.evaluation == "leaf")
DERIVED_OPERATORS = tuple(c for c in A.OPERATOR_CLASSES if c.evaluation == "derived")


class PlanNode(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    op: str                      # the operator class name (HasExistedWithin, ...)
    kind: Kind
    children: tuple[str, ...]    # ids of the nodes this one reads (empty for a leaf)
    label: str                   # canonical text of the sub-expression
    expr: A.Node

    @property
    def is_leaf(self) -> bool:
        return not self.children


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    source: str
    nodes: dict[str, PlanNode]   # children before parents
    root: str
    aggregation: A.Aggregation | None = None

    @property
    def root_node(self) -> PlanNode:
        return self.nodes[self.root]

    @property
    def leaves(self) -> list[PlanNode]:
        return [n for n in self.nodes.values() if n.is_leaf]

    @property
    def derived(self) -> list[PlanNode]:
        return [n for n in self.nodes.values() if not n.is_leaf]

    def columns(self) -> list[tuple[str, ...]]:
        """Every event field path the leaves read (and the group-by column)."""
        seen: dict[tuple[str, ...], None] = {}
        for node in self.leaves:
            for col in _columns_in(node.expr):
                seen[col.path] = None
        if self.aggregation is not None:
            seen[self.aggregation.group_by.path] = None
        return list(seen)

    def walk(self) -> Iterator[tuple[PlanNode, int, bool]]:
        """The tree from the root down, depth first: (node, depth, seen before). A shared node is
        yielded at each place it is read; below its first place only (the one plan walk)."""
        seen: set[str] = set()
        stack: list[tuple[str, int]] = [(self.root, 0)]
        while stack:
            nid, depth = stack.pop()
            node = self.nodes[nid]
            again = nid in seen
            yield node, depth, again
            if not again:
                seen.add(nid)
                stack.extend((c, depth + 1) for c in reversed(node.children))

    def depths(self) -> dict[str, int]:
        """Each node's longest distance from the root (parents before children when sorted)."""
        depth: dict[str, int] = {self.root: 0}
        for node in reversed(list(self.nodes.values())):  # parents come after children in `nodes`
            for c in node.children:
                depth[c] = max(depth.get(c, 0), depth.get(node.id, 0) + 1)
        return depth

    def closure(self, wanted: set[str]) -> set[str]:
        """`wanted` and every node they read, transitively."""
        out: set[str] = set()
        stack = list(wanted)
        while stack:
            n = stack.pop()
            if n not in out:
                out.add(n)
                stack.extend(self.nodes[n].children)
        return out

    def parents(self, node_id: str) -> list[str]:
        return [n.id for n in self.nodes.values() if node_id in n.children]

    def describe(self) -> dict[str, Any]:
        """A JSON-able view of the tree, for printing and the API."""
        return {
            "root": self.root,
            "nodes": [
                {"id": n.id, "op": n.op, "kind": n.kind.value, "leaf": n.is_leaf,
                 "children": list(n.children), "label": n.label}
                for n in self.nodes.values()
            ],
            "aggregation": self.aggregation.text() if self.aggregation else None,
        }


def _columns_in(node: A.Node):
    if isinstance(node, A.Column):
        yield node
    for child in node.children():
        yield from _columns_in(child)


def node_id(expr: A.Node) -> str:
    digest = hashlib.sha1(expr.text().encode()).hexdigest()[:8]
    return f"{expr.rule}-{digest}"


def _is_timeline(checked: Checked, expr: A.Node) -> bool:
    kind = checked.kinds.get(expr)
    return kind is not None and kind.is_timeline


def build_plan(checked: Checked, source: str) -> Plan:
    nodes: dict[str, PlanNode] = {}

    def visit(expr: A.Node) -> str:
        nid = node_id(expr)
        if nid in nodes:
            return nid
        if isinstance(expr, LEAF_OPERATORS):
            children: tuple[str, ...] = ()
        elif isinstance(expr, DERIVED_OPERATORS):
            # A derived node reads the timelines among its fields; constants stay in its expr.
            children = tuple(visit(c) for c in expr.children() if _is_timeline(checked, c))
        else:  # the checker lets only timelines through
            raise NotImplementedError(f"no plan rule for {type(expr).__name__}")
        nodes[nid] = PlanNode(id=nid, op=type(expr).__name__, kind=checked.kinds[expr], children=children,
                              label=A.strip_parens(expr.text()), expr=expr)
        return nid

    root = visit(checked.root)
    return Plan(source=source, nodes=nodes, root=root, aggregation=checked.query.aggregation)


def compile_expression(source: str) -> Plan:
    """Parse, type-check and compile an expression. Raises a DslError on mistakes."""
    query = parse(source)
    return build_plan(typecheck(query, source), source)


@functools.lru_cache(maxsize=512)
def plan_for(source: str) -> Plan:
    """`compile_expression`, once per expression text: plans are immutable, so a registration's
    plan is shared by everything in the process that serves it (feeder, API, workflows)."""
    return compile_expression(source)
