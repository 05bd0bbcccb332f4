"""`timeline worker`: the Temporal worker running node workflows and activities."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import (
    SandboxedWorkflowRunner,
    SandboxRestrictions,
)

from timeline.activities.results import ResultActivities
from timeline.models import TASK_QUEUE
from timeline.runtime.control import connect
from timeline.runtime.settings import WORKFLOW_TASK_SLOTS
from timeline.runtime.pulsar import open_client
from timeline.store import open_store
from timeline.workflows.aggregate import AggregateWorkflow, PartialAggregateWorkflow
from timeline.workflows.node import TimelineNodeWorkflow

log = logging.getLogger("timeline.worker")

# The pure algebra and its libraries are deterministic: import them once,
# outside the sandbox (numpy in particular cannot be re-imported inside it).
PASSTHROUGH = ("numpy", "lark", "msgspec", "pydantic", "timeline.dsl", "timeline.models")


def workflow_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH))


# The SDK fails a workflow task whose code does not yield within 2 s ("deadlock
# detection", meant for workflow code blocked on I/O; there is no option for it but
# turning it off with debug mode). The node's code is pure and yields after each part
# of a backlog, but with thousands of live keys per node on 2 loaded cores a part can
# take longer (a 100,000-session run still had such failures after the parts and the
# task slots); each failure evicts the workflow and replays its history, which loads
# the worker more. Workflow tasks keep Temporal's own timeout (10 s).
ACTIVATION_DEADLINE_S = 8


def _allow_slow_activations(worker: Worker) -> None:
    workflows = getattr(worker, "_workflow_worker", None)
    if workflows is not None and getattr(workflows, "_deadlock_timeout_seconds", None) is not None:
        workflows._deadlock_timeout_seconds = ACTIVATION_DEADLINE_S
    else:  # another SDK version: keep its default, and say so
        log.warning("could not set the workflow deadlock detection to %ss; the SDK's default applies",
                    ACTIVATION_DEADLINE_S)


async def run_worker(temporal: str, store_url: str, pulsar_url: str | None, task_queue: str = TASK_QUEUE,
                     stop: asyncio.Event | None = None, namespace: str = "default",
                     workflow_task_slots: int = WORKFLOW_TASK_SLOTS) -> None:
    client = await connect(temporal, namespace)
    store = open_store(store_url)
    pulsar_client = None
    if pulsar_url:
        pulsar_client = open_client(pulsar_url)
    activities = ResultActivities(store, pulsar_client)
    stop = stop or asyncio.Event()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        worker = Worker(client, task_queue=task_queue,
                        workflows=[TimelineNodeWorkflow, PartialAggregateWorkflow, AggregateWorkflow],
                        activities=[activities.publish_results, activities.registration_is_current,
                                    activities.publish_side_output],
                        activity_executor=pool,
                        max_concurrent_workflow_tasks=workflow_task_slots,  # at least 2: the SDK's minimum
                        workflow_task_executor=concurrent.futures.ThreadPoolExecutor(workflow_task_slots),
                        workflow_runner=workflow_runner())
        _allow_slow_activations(worker)
        async with worker:
            log.info("worker polling task queue %r on %s", task_queue, temporal)
            await stop.wait()
    # Close explicitly: letting the interpreter tear these down at exit crashed here.
    activities.close()
    if pulsar_client is not None:
        pulsar_client.close()
    store.close()
