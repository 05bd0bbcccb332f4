"""Driving the workflow tree from outside: register, feed, query, remove.

Used by the feeder, the CLI and the API. Registration starts every node
workflow (nodes x shards) so that a child can always signal its parent;
leaves are also signal-with-started by the feeder, so a lost workflow comes
back on the next batch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from dsl.compiler import Plan, compile_expression
from workflows.models import (
    TASK_QUEUE, EventBatchSignal, KeyAnswer, NodeInput, NodeStatus, TimelineSpec, node_workflow_id, shard_of,
)
from workflows.node import TimelineNodeWorkflow


async def connect(address: str, namespace: str = "default") -> Client:
    return await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter)


@dataclass(frozen=True)
class WorkflowNode:
    """One workflow of a timeline's tree."""

    workflow_id: str
    node_id: str
    shard: int
    leaf: bool
    children: tuple[str, ...]
    label: str


def workflow_tree(spec: TimelineSpec, plan: Plan | None = None) -> list[WorkflowNode]:
    plan = plan or compile_expression(spec.expression)
    out = []
    for shard in range(spec.shards):
        for node in plan.nodes.values():
            out.append(WorkflowNode(
                workflow_id=node_workflow_id(spec.name, node.id, shard), node_id=node.id, shard=shard,
                leaf=node.is_leaf,
                children=tuple(node_workflow_id(spec.name, c, shard) for c in node.children),
                label=node.label,
            ))
    return out


async def start_tree(client: Client, spec: TimelineSpec, continue_as_new_after: int | None = None,
                     task_queue: str = TASK_QUEUE) -> list[WorkflowNode]:
    """Start every node workflow of the timeline (already running ones are kept)."""
    tree = workflow_tree(spec)

    async def start(node: WorkflowNode):
        await client.start_workflow(
            TimelineNodeWorkflow.run,
            NodeInput(spec=spec, node_id=node.node_id, shard=node.shard, continue_as_new_after=continue_as_new_after),
            id=node.workflow_id, task_queue=task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    # Parents first, so a child's first signal always finds its parent.
    for depth_nodes in _by_depth_from_root(tree, spec):
        await asyncio.gather(*(start(n) for n in depth_nodes))
    return tree


def _by_depth_from_root(tree: list[WorkflowNode], spec: TimelineSpec) -> list[list[WorkflowNode]]:
    plan = compile_expression(spec.expression)
    depth: dict[str, int] = {plan.root: 0}
    for node in reversed(list(plan.nodes.values())):  # parents come after children in the plan
        for c in node.children:
            depth[c] = max(depth.get(c, 0), depth.get(node.id, 0) + 1)
    levels: dict[int, list[WorkflowNode]] = {}
    for n in tree:
        levels.setdefault(depth[n.node_id], []).append(n)
    return [levels[d] for d in sorted(levels)]


async def send_batch(client: Client, spec: TimelineSpec, plan: Plan, shard: int, batch: EventBatchSignal,
                     continue_as_new_after: int | None = None, task_queue: str = TASK_QUEUE) -> None:
    """One signal per leaf of the shard (signal-with-start), however many keys the batch holds."""

    async def signal(node_id: str):
        await client.start_workflow(
            TimelineNodeWorkflow.run,
            NodeInput(spec=spec, node_id=node_id, shard=shard, continue_as_new_after=continue_as_new_after),
            id=node_workflow_id(spec.name, node_id, shard), task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="events", start_signal_args=[batch],
        )

    await asyncio.gather(*(signal(n.id) for n in plan.leaves))


async def query_key(client: Client, spec: TimelineSpec, key: str, node_id: str | None = None) -> KeyAnswer:
    plan = compile_expression(spec.expression)
    node_id = node_id or plan.root
    handle = client.get_workflow_handle(node_workflow_id(spec.name, node_id, shard_of(key, spec.shards)))
    return await handle.query(TimelineNodeWorkflow.timeline, key)


async def node_status(client: Client, spec: TimelineSpec, node_id: str, shard: int) -> NodeStatus:
    handle = client.get_workflow_handle(node_workflow_id(spec.name, node_id, shard))
    return await handle.query(TimelineNodeWorkflow.status)


async def stop_tree(client: Client, spec: TimelineSpec) -> int:
    """Terminate every node workflow of a timeline; returns how many were running."""
    stopped = 0
    for node in workflow_tree(spec):
        handle = client.get_workflow_handle(node.workflow_id)
        try:
            desc = await handle.describe()
            if desc.status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate(reason="timeline removed")
                stopped += 1
        except RPCError:
            pass  # never started, or already gone
    return stopped
