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
from temporalio.service import RPCError

from timeline.dsl.compiler import Plan
from timeline.dsl.errors import TimelineError
from timeline.models import (
    TASK_QUEUE,
    AggregateAnswer,
    AggregateInput,
    AggregateQuery,
    EventBatchSignal,
    KeyAnswer,
    NodeInput,
    NodeStatus,
    PartialAggregateInput,
    TimelineSpec,
    aggregate_workflow_id,
    node_workflow_id,
    partial_aggregate_workflow_id,
    shard_of,
)
from timeline.runtime.codec import DATA_CONVERTER
from timeline.runtime.settings import Endpoints

# The node workflow's names (workflows/node.py): the runtime drives it by name, so
# this layer does not import the workflow code.
NODE_WORKFLOW = "TimelineNode"
EVENTS_SIGNAL = "events"
TIMELINE_QUERY = "timeline"
STATUS_QUERY = "status"
STOP_SIGNAL = "stop"
# How long stop_tree lets the workflows end on their own before it terminates the rest.
STOP_GRACE_S = 30.0
# The aggregate workflows' names (workflows/aggregate.py).
AGGREGATE_WORKFLOW = "TimelineAggregate"
PARTIAL_AGGREGATE_WORKFLOW = "TimelineAggregatePartial"
GROUPS_QUERY = "groups"


class ServiceUnavailable(TimelineError):
    """A server the command needs (Temporal, Pulsar) does not answer."""


async def connect(address: str, namespace: str = "default") -> Client:
    return await Client.connect(address, namespace=namespace, data_converter=DATA_CONVERTER)


async def connect_temporal(ep: Endpoints, timeout_s: float = 15) -> Client:
    """`connect`, with a ServiceUnavailable that says how to start Temporal."""
    try:
        return await asyncio.wait_for(connect(ep.temporal, ep.namespace), timeout=timeout_s)
    except Exception as exc:
        raise ServiceUnavailable(
            f"cannot reach Temporal at {ep.temporal} ({type(exc).__name__}: {exc}); start the embedded stack "
            "with `timeline up`, or pass --temporal HOST:PORT") from None


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
    plan = plan or spec.plan
    out = []
    for shard in range(spec.shards):
        for node in plan.nodes.values():
            out.append(WorkflowNode(
                workflow_id=node_workflow_id(spec, node.id, shard), node_id=node.id, shard=shard,
                leaf=node.is_leaf,
                children=tuple(node_workflow_id(spec, c, shard) for c in node.children),
                label=node.label,
            ))
    return out


async def start_tree(client: Client, spec: TimelineSpec, continue_as_new_after: int | None = None,
                     task_queue: str = TASK_QUEUE) -> list[WorkflowNode]:
    """Start every node workflow of the timeline (already running ones are kept)."""
    tree = workflow_tree(spec)

    async def start(node: WorkflowNode):
        await client.start_workflow(
            NODE_WORKFLOW,
            NodeInput(spec=spec, node_id=node.node_id, shard=node.shard, continue_as_new_after=continue_as_new_after),
            id=node.workflow_id, task_queue=task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    if spec.aggregated:  # before the nodes that feed them
        await start_aggregates(client, spec, task_queue)
    # Parents first, so a child's first signal always finds its parent.
    for depth_nodes in _by_depth_from_root(tree, spec):
        await asyncio.gather(*(start(n) for n in depth_nodes))
    return tree


def _by_depth_from_root(tree: list[WorkflowNode], spec: TimelineSpec) -> list[list[WorkflowNode]]:
    depth = spec.plan.depths()
    levels: dict[int, list[WorkflowNode]] = {}
    for n in tree:
        levels.setdefault(depth.get(n.node_id, 0), []).append(n)  # the group-by leaf has no parent node
    return [levels[d] for d in sorted(levels)]


async def send_batch(client: Client, spec: TimelineSpec, plan: Plan, shard: int, batch: EventBatchSignal,
                     continue_as_new_after: int | None = None, task_queue: str = TASK_QUEUE) -> None:
    """One signal per leaf of the shard (signal-with-start), however many keys the batch holds."""

    async def signal(node_id: str):
        await client.start_workflow(
            NODE_WORKFLOW,
            NodeInput(spec=spec, node_id=node_id, shard=shard, continue_as_new_after=continue_as_new_after),
            id=node_workflow_id(spec, node_id, shard), task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=EVENTS_SIGNAL, start_signal_args=[batch],
        )

    await asyncio.gather(*(signal(n.id) for n in plan.leaves))


async def query_key(client: Client, spec: TimelineSpec, key: str, node_id: str | None = None) -> KeyAnswer:
    node_id = node_id or spec.plan.root
    handle = client.get_workflow_handle(node_workflow_id(spec, node_id, shard_of(key, spec.shards)))
    return await handle.query(TIMELINE_QUERY, key, result_type=KeyAnswer)


async def node_status(client: Client, spec: TimelineSpec, node_id: str, shard: int) -> NodeStatus:
    handle = client.get_workflow_handle(node_workflow_id(spec, node_id, shard))
    return await handle.query(STATUS_QUERY, result_type=NodeStatus)


async def stop_tree(client: Client, spec: TimelineSpec, grace_s: float = STOP_GRACE_S) -> int:
    """Stop every node workflow of a timeline (and its aggregates); returns how many were running.

    Each running workflow is asked to stop (the "stop" signal: it sends on what it holds and
    ends), and only one that has not ended within `grace_s` (no worker polls, a publish keeps
    failing) is terminated. Terminating at once fails the workflow task a worker may be
    running at that moment: Temporal records WORKFLOW_TASK_FAILED with cause
    FORCE_CLOSE_COMMAND (a workflow task failure in a run's history, which the small payload
    limit test saw when it restarted a tree just registered) and drops what was not sent.
    Returns once none of them runs, so a start_tree after it starts new runs."""
    handles = [client.get_workflow_handle(wid)
               for wid in [n.workflow_id for n in workflow_tree(spec)] + aggregate_workflow_ids(spec)]

    async def running(handle) -> bool:
        try:
            return (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        except RPCError:
            return False  # never started, or already gone

    async def ask_to_stop(handle) -> None:
        try:
            await handle.signal(STOP_SIGNAL)
        except RPCError:
            pass  # it ended meanwhile

    flags = await asyncio.gather(*(running(h) for h in handles))
    live = [h for h, up in zip(handles, flags) if up]
    await asyncio.gather(*(ask_to_stop(h) for h in live))
    deadline = asyncio.get_running_loop().time() + grace_s
    left = live
    while left:
        flags = await asyncio.gather(*(running(h) for h in left))
        left = [h for h, up in zip(left, flags) if up]
        if not left or asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(0.2)
    for handle in left:
        try:
            await handle.terminate(reason=f"timeline stopped: did not end within {grace_s:g}s of the stop signal")
        except RPCError:
            pass  # it ended meanwhile
    return len(live)


# --- live aggregates (workflows/aggregate.py) ---------------------------------------------------------


def aggregate_workflow_ids(spec: TimelineSpec) -> list[str]:
    """The combining aggregate workflow and each shard's partial (none without an aggregation)."""
    if not spec.aggregated:
        return []
    return [aggregate_workflow_id(spec)] + [partial_aggregate_workflow_id(spec, s)
                                                 for s in range(spec.shards)]


async def start_aggregates(client: Client, spec: TimelineSpec, task_queue: str = TASK_QUEUE) -> None:
    """Start the combiner, then every shard's partial (running ones are kept)."""
    await client.start_workflow(AGGREGATE_WORKFLOW, AggregateInput(spec=spec), id=aggregate_workflow_id(spec),
                                task_queue=task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    await asyncio.gather(*(
        client.start_workflow(PARTIAL_AGGREGATE_WORKFLOW, PartialAggregateInput(spec=spec, shard=shard),
                              id=partial_aggregate_workflow_id(spec, shard), task_queue=task_queue,
                              id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
        for shard in range(spec.shards)))


async def query_aggregate(client: Client, spec: TimelineSpec, query: AggregateQuery) -> AggregateAnswer:
    """The groups at the times asked for, from the combined aggregate (every shard's partial, merged)."""
    handle = client.get_workflow_handle(aggregate_workflow_id(spec))
    return await handle.query(GROUPS_QUERY, query, result_type=AggregateAnswer)
