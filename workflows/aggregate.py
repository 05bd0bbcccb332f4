"""Live aggregates: a partial aggregate per shard, and one workflow that combines them.

An aggregated timeline (`EXPR | aggregate(group_by(col), ...)`) runs its node
tree as any timeline does, plus the leaf `latest_event_to_state(col)` (each
key's group over time, `dsl.aggregate.runtime_plan`). Per shard, the root
(values) and that leaf (groups) send their span patches to the shard's
`TimelineAggregatePartial`, exactly as they would to a parent node: the same
`PatchSignal`, skipped when its seq was applied. The partial keeps its live
keys' two timelines and, folded into one series, the keys the root closed;
after each step it sends what changed of its series (`dsl.aggregate.AggregateSeries`,
exact at every time) from the earliest changed time on, to `TimelineAggregate`,
which patches its copy of the shard's series and merges the shards'. Both are
thin shells: the algebra is `dsl/aggregate.py`.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from timeline.dsl.aggregate import (
        AggregateSeries,
        answer_times,
        group_leaf_id,
        merge_series,
        patch_series,
        series_of_snapshots,
        series_since,
    )
    from timeline.dsl.incremental import KeyTimeline
    from timeline.models import (
        AggregateAnswer,
        AggregateInput,
        AggregatePoint,
        AggregateQuery,
        PartialAggregateInput,
        PartialAggregateSignal,
        PatchSignal,
        ShardAggregate,
        aggregate_workflow_id,
    )

PARTIAL_SIGNAL = "partial"


@workflow.defn(name="TimelineAggregatePartial", sandboxed=False)
class PartialAggregateWorkflow:
    """One shard's aggregate: the root's and group leaf's patches in, the shard's series out."""

    def __init__(self) -> None:
        self.pending: list[PatchSignal] = []
        self.stopping = False
        self.input: PartialAggregateInput | None = None
        self.unsent: int | None = None   # the earliest time changed since the last send
        self.recount = False             # keys closed since the last send (the series is unchanged)
        self.sending = False

    @workflow.signal(name="patches")
    def patches(self, signal: PatchSignal) -> None:
        self.pending.append(signal)

    @workflow.signal(name="stop")
    def stop(self) -> None:
        self.stopping = True

    @workflow.query(name="series")
    def series(self) -> AggregateSeries:
        assert self.input is not None
        return self._series()

    @workflow.run
    async def run(self, inp: PartialAggregateInput) -> None:
        self.input = inp
        plan = inp.spec.plan
        self.root, self.group = plan.root, group_leaf_id(plan)
        self.combiner = aggregate_workflow_id(inp.spec)
        sender = asyncio.create_task(self._sender())
        try:
            while True:
                await workflow.wait_condition(lambda: bool(self.pending) or self.stopping)
                if self.pending:
                    self._apply_pending()
                if self.stopping and not self.pending:
                    await workflow.wait_condition(lambda: self._sent() and not self.sending)
                    return
                if workflow.info().is_continue_as_new_suggested():
                    await workflow.wait_condition(
                        lambda: workflow.all_handlers_finished() and self._sent() and not self.sending)
                    if not self.pending:
                        workflow.continue_as_new(self.input)
        finally:
            sender.cancel()

    def _apply_pending(self) -> None:
        inp = self.input
        assert inp is not None
        for signal in self.pending:
            if signal.seq <= inp.child_seq.get(signal.child, 0):
                continue  # already applied (a redelivered signal)
            inp.child_seq[signal.child] = signal.seq
            stores = []
            if signal.child == self.root:
                stores.append(inp.values)
            if signal.child == self.group:
                stores.append(inp.groups)
            for patch in signal.patches:
                self.unsent = patch.since if self.unsent is None else min(self.unsent, patch.since)
                for store in stores:
                    store[patch.key] = store.get(patch.key, KeyTimeline()).with_patch(patch)
            if signal.child == self.root and signal.closed:
                # A closed key's timeline is final: fold it in once, and forget the key.
                closed = [k for k in signal.closed if k in inp.values]
                inp.closed = merge_series([inp.closed, series_of_snapshots(inp.values, inp.groups, closed)])
                for k in closed:
                    inp.values.pop(k, None)
                    inp.groups.pop(k, None)
                inp.keys_closed += len(closed)
                self.recount = self.recount or bool(closed)
        self.pending.clear()

    def _series(self, since: int | None = None) -> AggregateSeries:
        """The shard's series (its part from `since` on, when given: only what a change must carry)."""
        inp = self.input
        assert inp is not None
        # Only keys the root holds count: the root has every key from its first event on.
        live = series_of_snapshots(inp.values, inp.groups, list(inp.values), since)
        closed = inp.closed if since is None else series_since(inp.closed, since)
        return merge_series([closed, live])

    def _sent(self) -> bool:
        return self.unsent is None and not self.recount

    async def _sender(self) -> None:
        """Sends the series' change, one signal at a time: what changes meanwhile leaves in the next one.
        (Folding a closed key changes no value: it only moves the key from live to closed.)"""
        while True:
            await workflow.wait_condition(lambda: not self._sent())
            inp = self.input
            assert inp is not None
            since, self.unsent, self.recount = self.unsent, None, False
            self.sending = True
            inp.seq += 1
            try:
                change = AggregateSeries() if since is None else self._series(since)
                signal = PartialAggregateSignal(shard=inp.shard, seq=inp.seq, since=since, series=change,
                                                live_keys=len(inp.values), closed_keys=inp.keys_closed)
                await workflow.get_external_workflow_handle(self.combiner).signal(PARTIAL_SIGNAL, signal)
            finally:
                self.sending = False


@workflow.defn(name="TimelineAggregate", sandboxed=False)
class AggregateWorkflow:
    """The whole aggregate: every shard's series, patched in seq order, merged."""

    def __init__(self) -> None:
        self.pending: list[PartialAggregateSignal] = []
        self.stopping = False
        self.input: AggregateInput | None = None
        self.merged: AggregateSeries | None = None  # merged when a query needs it, not on every signal

    @workflow.signal(name=PARTIAL_SIGNAL)
    def partial(self, signal: PartialAggregateSignal) -> None:
        self.pending.append(signal)

    @workflow.signal(name="stop")
    def stop(self) -> None:
        self.stopping = True

    @workflow.query(name="groups")
    def groups(self, query: AggregateQuery) -> AggregateAnswer:
        """The groups at the times asked for (pure: computed from the merged series, nothing changes)."""
        inp = self.input
        assert inp is not None and inp.spec.plan.aggregation is not None
        if self.merged is None:  # a cache only: nothing the workflow does depends on it
            self.merged = merge_series(p.series for p in inp.shards.values())
        merged = self.merged
        times, truncated = answer_times(merged, query.t, query.frm, query.to, query.step)
        functions = inp.spec.plan.aggregation.functions
        parts = inp.shards.values()
        return AggregateAnswer(timeline=inp.spec.name, truncated=truncated,
                               points=[AggregatePoint(t=t, groups=merged.at(t, functions)) for t in times],
                               shards_reported=len(inp.shards), shards=inp.spec.shards,
                               live_keys=sum(p.live_keys for p in parts),
                               closed_keys=sum(p.closed_keys for p in parts))

    @workflow.run
    async def run(self, inp: AggregateInput) -> None:
        self.input = inp
        while True:
            await workflow.wait_condition(lambda: bool(self.pending) or self.stopping)
            changed = False
            for signal in self.pending:  # in arrival order: one sender per shard, one signal at a time
                shard = inp.shards.setdefault(signal.shard, ShardAggregate())
                if signal.seq <= shard.seq:
                    continue  # already applied (a redelivered signal)
                shard.seq = signal.seq
                if signal.since is not None:
                    shard.series = patch_series(shard.series, signal.since, signal.series)
                shard.live_keys, shard.closed_keys = signal.live_keys, signal.closed_keys
                changed = True
            self.pending.clear()
            if changed:
                self.merged = None
            if self.stopping:
                return
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(lambda: workflow.all_handlers_finished())
                if not self.pending:
                    workflow.continue_as_new(inp)
