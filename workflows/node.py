"""The node workflow: one per plan node per shard, a thin deterministic shell.

Signal handlers only record what arrived; the main loop applies everything
queued as one step of the pure evaluator (dsl.incremental), sends its span
changes to each parent in one signal, and, at the root, hands them to the
publish activity. Keys idle past the timeline's idle timeout are closed (the
root emits their final timelines) and released. The run continues as new when
Temporal suggests it, carrying only live state: per key, only what the
registration's allowed lateness can still change (the pure steps compact it;
what is final was sent on). Events later than that are side-output as "late" by
one leaf of each shard (every leaf sees the same events).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from timeline.dsl.eventcheck import time_problem, value_problem
    from timeline.dsl.incremental import (
        DerivedStep,
        EventBatch,
        KeyTimeline,
        LateEvent,
        LeafStep,
        SpanPatch,
    )
    from timeline.runtime.codec import stored_size
    from timeline.models import (
        AppliedPositions,
        EventBatchSignal,
        KeyAnswer,
        LateBatch,
        NodeInput,
        NodeStatus,
        PatchSignal,
        RegistrationCheck,
        ResultsBatch,
        aggregate_destinations,
        node_workflow_id,
        partition_name,
        side_output_topic,
        signal_budget,
        split_patch_signal,
    )

PUBLISH_TIMEOUT = timedelta(seconds=60)
PUBLISH = "publish"
REGISTRATION_CHECK_TIMEOUT = timedelta(seconds=30)
SIDE_OUTPUT = "side-output"
# Measuring the state serialises it: do it every few batches, not on each.
MEASURE_EVERY_BATCHES = 16
# One workflow activation must give control back within 2 s (the SDK's deadlock
# detection; fixed). Signals pile up while a worker is behind and arrive in one
# activation: applying such a backlog at once took longer than that on a loaded
# machine (the task then failed, and its retries had the same backlog). A node applies
# at most this many events or patches per activation (at least one signal), then
# starts a new one with a 1 ms timer (each part costs a workflow task: parts of a
# few hundred made the benchmark's history per event nearly three times larger).
MAX_ITEMS_PER_ACTIVATION = 10_000
CHUNKED_APPLY = "apply-backlog-in-parts-of-10k"
PUBLISH_AS_ACTIVITY = "publish-as-activity"
# A node carries at most this times its registration's max_state_bytes into
# continue-as-new (1.5 MB by default, under Temporal's 2 MB payload limit), counted
# as Temporal stores it (compressed by the runtime's codec).
CARRY_FACTOR = 1.5


class _Outbox:
    """Changes waiting for one destination, merged in arrival order."""

    def __init__(self) -> None:
        self.patches: list[SpanPatch] = []
        self.watermarks: dict[str, int] = {}
        self.closed: dict[str, KeyTimeline] = {}
        self.late: list[LateEvent] = []   # the side output's box

    def add(self, patches, watermarks, closed) -> None:
        self.patches.extend(patches)  # in order: a receiver applies them one after another
        for k, wm in watermarks.items():
            self.watermarks[k] = max(wm, self.watermarks.get(k, wm))
        self.closed.update(closed)

    def __bool__(self) -> bool:
        return bool(self.patches or self.watermarks or self.closed or self.late)


# Not sandboxed: the node runs only the pure, deterministic algebra (dsl/), and
# the sandbox's proxied builtins cost a quarter of the worker's CPU here.
@workflow.defn(name="TimelineNode", sandboxed=False)
class TimelineNodeWorkflow:
    def __init__(self) -> None:
        self.pending_events: list[EventBatchSignal] = []
        self.pending_patches: list[PatchSignal] = []
        self.stopping = False
        self.idle_due = False
        self.input: NodeInput | None = None
        self.step: LeafStep | DerivedStep | None = None
        self.batches_applied = 0
        self.run_batches = 0
        # What is waiting to go out, per destination (a parent's workflow id, or
        # PUBLISH at the root). Sender tasks drain these, so applying never waits
        # on a round trip, and what piles up meanwhile leaves in one signal.
        self.outbox: dict[str, _Outbox] = {}
        self.sending = 0
        self.applied = AppliedPositions()
        self.state_bytes = 0      # the state's JSON, as last measured
        self.payload_bytes = 0    # the same as Temporal would store it (compressed): what the limit counts
        self.measured_at = 0
        self.deferred_until = 0   # continue-as-new put off (state too large to carry) until this batch

    # --- handlers: record only ---------------------------------------------------
    @workflow.signal(name="events")
    def events(self, batch: EventBatchSignal) -> None:
        self.pending_events.append(batch)

    @workflow.signal(name="patches")
    def patches(self, signal: PatchSignal) -> None:
        self.pending_patches.append(signal)

    @workflow.signal(name="stop")
    def stop(self) -> None:
        self.stopping = True

    @workflow.query(name="timeline")
    def timeline(self, key: str) -> KeyAnswer:
        """The key's timeline from its frontier on (before it, it is final and published)."""
        assert self.step is not None and self.input is not None
        return KeyAnswer(key=key, node_id=self.input.node_id, timeline=self.step.timeline(key),
                         watermark=self.input.watermarks.get(key))

    @workflow.query(name="timelines")
    def timelines(self, keys: list[str]) -> list[KeyAnswer]:
        """Many keys in one query (bulk reads); keys the node does not hold are left out."""
        assert self.step is not None and self.input is not None
        held = self.step.timelines
        return [KeyAnswer(key=k, node_id=self.input.node_id, timeline=held[k], watermark=self.input.watermarks.get(k))
                for k in keys if k in held]

    @workflow.query(name="keys")
    def keys(self) -> list[str]:
        return sorted(self.step.timelines) if self.step is not None else []

    @workflow.query(name="status")
    def status(self) -> NodeStatus:
        assert self.step is not None and self.input is not None
        json_bytes, size = self._state_sizes()
        limit = self.input.spec.max_state_bytes
        return NodeStatus(node_id=self.input.node_id, shard=self.input.shard, keys=len(self.step.timelines),
                          seq=self.input.seq, batches_applied=self.batches_applied,
                          events_applied=self.input.events_applied, state_bytes=json_bytes, payload_bytes=size,
                          run_batches=self.run_batches,
                          duplicates_skipped=self.input.duplicates_skipped,
                          events_rejected=self.input.events_rejected, generation=self.input.spec.generation,
                          late_events=getattr(self.step, "late_events", 0), max_state_bytes=limit,
                          largest_carried_bytes=self.input.largest_carried_bytes,
                          health="ok" if size <= limit else "state_over_limit")

    # --- the main loop ---------------------------------------------------------------
    @workflow.run
    async def run(self, inp: NodeInput) -> None:
        self.input = inp
        # A removed registration's workflow, started again by a feeder that had not yet
        # noticed the removal (signal-with-start), ends here without applying anything.
        current = await workflow.execute_local_activity(
            "registration_is_current", RegistrationCheck(name=inp.spec.name, generation=inp.spec.generation),
            result_type=bool, start_to_close_timeout=REGISTRATION_CHECK_TIMEOUT,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)))
        if not current:
            workflow.logger.info("timeline %s (generation %r) is no longer registered: node %s shard %d stops",
                                 inp.spec.name, inp.spec.generation, inp.node_id, inp.shard)
            return
        self.applied = AppliedPositions(inp.applied_positions)
        for topic, position in inp.applied.items():  # a run from before exactly-once: its last position
            self.applied.floors.setdefault(topic, tuple(position))
        plan = inp.spec.plan  # compiled once per run: pure and deterministic
        self.plan = plan
        node = plan.nodes[inp.node_id]
        self.node = node
        self.parents = [node_workflow_id(inp.spec, p, inp.shard) for p in plan.parents(node.id)]
        self.is_root = node.id == plan.root
        lateness = inp.spec.allowed_lateness_ms
        if node.is_leaf:
            self.step = LeafStep(node, lateness)
            if inp.leaf_state is not None:
                self.step.restore(inp.leaf_state)
        else:
            self.step = DerivedStep(node, [plan.nodes[c].kind for c in node.children], lateness)
            if inp.derived_state is not None:
                self.step.restore(inp.derived_state)
        # Every leaf of a shard sees the same events, so the same ones are late at each:
        # the first leaf reports them.
        self.reports_late = node.is_leaf and node.id == plan.leaves[0].id
        idle_timer = asyncio.create_task(self._idle_clock())
        # An aggregated timeline's root and group-by leaf also feed their shard's partial aggregate.
        destinations = (self.parents or ([PUBLISH] if self.is_root else [])) + aggregate_destinations(
            inp.spec, node.id, inp.shard)
        if self.reports_late:
            destinations = destinations + [SIDE_OUTPUT]
        self.outbox = {d: _Outbox() for d in destinations}
        senders = [asyncio.create_task(self._sender(d)) for d in destinations]
        try:
            while True:
                await workflow.wait_condition(
                    lambda: bool(self.pending_events or self.pending_patches) or self.stopping or self.idle_due)
                if self.pending_events or self.pending_patches:
                    # (Histories written before chunking replay as they ran: all at once.)
                    budget = MAX_ITEMS_PER_ACTIVATION if workflow.patched(CHUNKED_APPLY) else None
                    later_events, later_patches = self._hold_back(budget)
                    self._apply_pending()
                    self.pending_events, self.pending_patches = later_events, later_patches
                    if later_events or later_patches:
                        await workflow.sleep(timedelta(milliseconds=1))
                if self.idle_due:
                    self.idle_due = False
                    self._close_idle()
                if self.stopping:
                    # What came before the stop is applied (the rest of a backlog held back for
                    # the next activation too, at once: the node ends here); then it sends on
                    # what it holds and ends (runtime/control.py stop_tree).
                    if self.pending_events or self.pending_patches:
                        self._apply_pending()
                    await workflow.wait_condition(lambda: not self.sending and not any(self.outbox.values()))
                    return
                if self._should_continue_as_new():
                    # Carry nothing in flight: every change sent, every handler done.
                    await workflow.wait_condition(
                        lambda: workflow.all_handlers_finished() and not self.sending
                        and not any(self.outbox.values()))
                    if not (self.pending_events or self.pending_patches):
                        self._measure()
                        if self.payload_bytes > CARRY_FACTOR * inp.spec.max_state_bytes:
                            # Carrying this much could pass the server's payload limit and fail the
                            # task on every retry: keep serving in this run (health says why) and
                            # try again later, when closed keys may have made room.
                            self.deferred_until = self.run_batches + MEASURE_EVERY_BATCHES
                            continue
                        inp.largest_carried_bytes = max(inp.largest_carried_bytes, self.payload_bytes)
                        workflow.continue_as_new(self._next_input())
        finally:
            idle_timer.cancel()
            for task in senders:
                task.cancel()

    async def _idle_clock(self) -> None:
        interval = max(1.0, self.input.spec.idle_timeout_s / 2)  # type: ignore[union-attr]
        while True:
            await workflow.sleep(interval)
            if self.input is not None and self.input.last_seen:
                self.idle_due = True

    def _should_continue_as_new(self) -> bool:
        if self.run_batches < self.deferred_until:
            return False
        limit = self.input.continue_as_new_after  # type: ignore[union-attr]
        if limit is not None and self.run_batches >= limit:
            return True
        if self.run_batches and self.run_batches % MEASURE_EVERY_BATCHES == 0 and self.run_batches != self.measured_at:
            self.measured_at = self.run_batches
            self._measure()
        return workflow.info().is_continue_as_new_suggested()

    def _state_sizes(self) -> tuple[int, int]:
        """The state continue-as-new would carry: its JSON bytes, and the bytes Temporal would
        store (compressed by the codec: what the limit counts). Reads only (queries call it)."""
        state = self._next_input().model_dump_json().encode()
        return len(state), stored_size(state)

    def _measure(self) -> None:
        """The state's size; past the registration's limit, say so (once per crossing)."""
        json_bytes, size = self._state_sizes()
        limit = self.input.spec.max_state_bytes  # type: ignore[union-attr]
        if size > limit >= self.payload_bytes:
            workflow.logger.warning(
                "timeline %s node %s shard %d holds %d bytes of state (%d as stored), over its limit of %d: more "
                "live keys than a shard holds (README: capacity model); register the timeline with more shards",
                self.input.spec.name, self.node.id, self.input.shard, json_bytes, size,  # type: ignore[union-attr]
                limit)
        self.state_bytes = json_bytes
        self.payload_bytes = size

    # --- applying what arrived ---------------------------------------------------------
    def _hold_back(self, budget: int | None) -> tuple[list[EventBatchSignal], list[PatchSignal]]:
        """Leaves pending only what one activation applies (whole signals, in order, at least
        one; a leaf gets events, a derived node patches); returns the rest, for the next."""
        if budget is None:
            return [], []

        def split(pending: list, size) -> list:
            used = 0
            for i, signal in enumerate(pending):
                if used and used + size(signal) > budget:
                    held = pending[i:]
                    del pending[i:]
                    return held
                used += size(signal)
            return []

        return (split(self.pending_events, lambda sig: len(sig.positions)),
                split(self.pending_patches, lambda sig: len(sig.patches)))

    def _apply_pending(self) -> None:
        inp = self.input
        assert inp is not None and self.step is not None
        now = workflow.now().timestamp()
        if isinstance(self.step, LeafStep):
            batch = self._fresh_events()
            patches = self._guarded(len(batch), self.step.apply, batch) if len(batch) else []
            inp.events_applied += len(batch)
            late = self.step.take_late()
            if late and self.reports_late:
                box = self.outbox[SIDE_OUTPUT]
                box.late.extend(late)
            for key, t in zip(batch.keys, batch.times):
                if t > inp.watermarks.get(key, t - 1):
                    inp.watermarks[key] = t
            touched = set(batch.keys)
            watermarks = {k: inp.watermarks[k] for k in touched}
        else:
            per_child, watermarks = self._fresh_patches()
            patches = self._guarded(0, self.step.apply, per_child, watermarks)
            touched = {p.key for p in patches}
            for key, wm in watermarks.items():
                inp.watermarks[key] = wm
        for key in touched:
            inp.last_seen[key] = now
        if not patches and not watermarks:
            return
        self._send(patches, watermarks, {})

    def _guarded(self, n_events: int, apply, *args) -> list[SpanPatch]:
        """One step of the pure evaluator; a failure is logged and counted, never a failed
        workflow task (which Temporal would retry forever, stopping the shard). The feeder
        and _fresh_events keep known poison out; this is the last line."""
        try:
            return apply(*args)
        except Exception as exc:  # noqa: BLE001 - any bug or bad value: the stream goes on
            self.input.events_rejected += max(1, n_events)
            workflow.logger.error("timeline %s node %s shard %d could not apply a batch (%s: %s); skipped",
                                  self.input.spec.name, self.node.id, self.input.shard, type(exc).__name__, exc)
            return []

    def _usable(self, signal: EventBatchSignal, i: int, paths: list[str]) -> bool:
        """Event i's time and values within the documented limits (the feeder checks them too)."""
        problem = time_problem(signal.events.times[i])
        for path in paths:
            if problem is not None:
                break
            col = signal.events.columns.get(path)
            if col is not None:
                problem = value_problem(col[i], f"field '{path}'")
        if problem is not None:
            self.input.events_rejected += 1
            workflow.logger.warning("timeline %s node %s: event of key %r not applied: %s",
                                    self.input.spec.name, self.node.id, signal.events.keys[i], problem)
        return problem is None

    def _fresh_events(self) -> EventBatch:
        """Queued batches, each event once: positions already applied (redelivered, in this
        signal or an earlier one, in any order) are skipped, per topic partition."""
        inp = self.input
        keys: list[str] = []
        times: list[int] = []
        columns: dict[str, list] = {}
        paths = [".".join(p) for p in self.plan.columns()]
        first_time = self.applied.first_time
        for signal in self.pending_events:
            if signal.generation and signal.generation != inp.spec.generation:  # "": the sender did not say
                inp.events_rejected += len(signal.positions)
                workflow.logger.warning("timeline %s node %s: dropped a batch routed for generation %r (this is %r)",
                                        inp.spec.name, self.node.id, signal.generation, inp.spec.generation)
                continue
            parts = signal.partitions or [-1] * len(signal.positions)
            names = {p: partition_name(signal.topic, p) for p in set(parts)}
            take = [i for i, (pos, part) in enumerate(zip(signal.positions, parts))
                    if first_time(names[part], tuple(pos))]
            inp.duplicates_skipped += len(signal.positions) - len(take)
            take = [i for i in take if self._usable(signal, i, paths)]
            if not take:
                continue
            ev = signal.events
            keys.extend(ev.keys[i] for i in take)
            times.extend(ev.times[i] for i in take)
            for path in paths:
                col = ev.columns.get(path)
                columns.setdefault(path, []).extend(col[i] if col is not None else None for i in take)
        self.pending_events.clear()
        return EventBatch(keys=keys, times=times, columns=columns)

    def _fresh_patches(self) -> tuple[list[list[SpanPatch]], dict[str, int]]:
        inp = self.input
        children = list(self.node.children)
        per_child: list[list[SpanPatch]] = [[] for _ in children]
        child_wm = inp.child_watermarks
        moved: dict[str, None] = {}
        for signal in self.pending_patches:
            if signal.seq <= inp.child_seq.get(signal.child, 0):
                continue  # already applied (a redelivered signal)
            inp.child_seq[signal.child] = signal.seq
            for i, c in enumerate(children):
                if c == signal.child:
                    per_child[i].extend(signal.patches)
            for key, wm in signal.watermarks.items():
                child_wm.setdefault(key, {})[signal.child] = wm
                moved[key] = None
        self.pending_patches.clear()
        # A derived node is final only up to its least progressed child. Only the keys whose
        # watermarks came in now: sending every key's each batch made signals grow with the keys.
        n_children = len(set(children))
        watermarks = {k: min(v.values()) for k in moved if len(v := child_wm[k]) == n_children}
        return per_child, watermarks

    def _send(self, patches: list[SpanPatch], watermarks: dict[str, int], closed: dict[str, KeyTimeline]) -> None:
        self.batches_applied += 1
        self.run_batches += 1
        for destination, box in self.outbox.items():
            if destination != SIDE_OUTPUT:
                box.add(patches, watermarks, closed)

    async def _sender(self, destination: str) -> None:
        """Sends what piles up for one destination, one signal (or publish) at a time, in order."""
        box_of = self.outbox
        while True:
            await workflow.wait_condition(lambda: bool(box_of[destination]))
            box = box_of[destination]
            box_of[destination] = _Outbox()
            inp = self.input
            if destination != SIDE_OUTPUT:  # the seq orders what parents and the store apply
                inp.seq += 1
            self.sending += 1
            try:
                # Regular activities, not local ones: a local activity runs inside the workflow
                # task, so when that task then fails (a signal came in as it completed with
                # continue-as-new: UNHANDLED_COMMAND; a worker killed), its side effect has
                # happened although history never saw it, and the retry publishes another
                # batch under the same seq. The store then kept a change the root's state
                # never had (a "phantom" the root's later diffs cannot see, found in the
                # small-payload-limit test). A scheduled activity exists only once its task
                # completed. (Histories from before replay their local activities.)
                run = (workflow.execute_activity if workflow.patched(PUBLISH_AS_ACTIVITY)
                       else workflow.execute_local_activity)
                if destination == SIDE_OUTPUT:
                    await run(
                        "publish_side_output",
                        LateBatch(timeline=inp.spec.name, shard=inp.shard, node_id=self.node.id, reason="late",
                                  events=box.late, topic=side_output_topic(inp.spec)),
                        start_to_close_timeout=PUBLISH_TIMEOUT,
                        retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
                    )
                elif destination == PUBLISH:
                    await run(
                        "publish_results",
                        ResultsBatch(timeline=inp.spec.name, shard=inp.shard, seq=inp.seq, patches=box.patches,
                                     watermarks=box.watermarks, closed=box.closed,
                                     results_topic=inp.spec.results_topic_name, generation=inp.spec.generation),
                        start_to_close_timeout=PUBLISH_TIMEOUT,
                        retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
                    )
                else:
                    handle = workflow.get_external_workflow_handle(destination)
                    for signal in self._patch_signals(box):
                        await handle.signal("patches", signal)
            finally:
                self.sending -= 1

    def _patch_signals(self, box: _Outbox) -> list[PatchSignal]:
        """The box as one signal, or several in order when it would pass the signal budget
        (Temporal refuses a payload over its blob limit, and the task that sends it fails
        on every retry: the shard stops); each takes its own seq. A single key's patch can
        pass it alone (a leaf that applies many events of one key in one step, when it
        lags behind its input): it is cut into consecutive patches."""
        inp = self.input
        whole = PatchSignal(child=self.node.id, seq=inp.seq, patches=box.patches, watermarks=box.watermarks,
                            closed=list(box.closed))
        signals = split_patch_signal(whole, signal_budget(inp.spec))
        inp.seq = signals[-1].seq
        return signals

    def _close_idle(self) -> None:
        inp = self.input
        now = workflow.now().timestamp()
        idle = [k for k, seen in inp.last_seen.items() if now - seen >= inp.spec.idle_timeout_s]
        if not idle:
            return
        closed = {k: self.step.timeline(k) for k in idle} if self.is_root else {}
        if self.is_root:  # the root emits the final timelines
            self._send([], {}, closed)
        self.step.release(idle)
        for k in idle:
            inp.last_seen.pop(k, None)
            inp.watermarks.pop(k, None)
            inp.child_watermarks.pop(k, None)

    def _next_input(self) -> NodeInput:
        inp = self.input
        snap = self.step.snapshot()
        update = {"leaf_state": snap} if isinstance(self.step, LeafStep) else {"derived_state": snap}
        if isinstance(self.step, LeafStep):
            update.update(applied_positions=self.applied.saved(), applied={})
        return inp.model_copy(update=update)
