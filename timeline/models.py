"""The data that crosses process boundaries in the durable runtime, and the
id builders: one module, so the worker, feeder, API and CLI agree."""

from __future__ import annotations

import json
import re
import uuid
import zlib
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_validator,
    model_validator,
)

from timeline.dsl.aggregate import AggregateSeries, group_leaf_id, runtime_plan
from timeline.dsl.compiler import Plan
from timeline.dsl.limits import (
    DEDUPE_WINDOW,
    DEFAULT_ALLOWED_LATENESS_S,
    DEFAULT_MAX_STATE_BYTES,
    MAX_ALLOWED_LATENESS_S,
    MAX_SIGNAL_BYTES,
    MAX_STATE_BYTES,
)
from timeline.dsl.incremental import (
    DerivedSnapshot,
    EventBatch,
    KeyTimeline,
    LateEvent,
    LeafSnapshot,
    SpanPatch,
)

TASK_QUEUE = "timeline"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class SourceSpec(BaseModel):
    """Where a timeline's events come from: a topic, and where key and time are in its events.

    `key_path` is a dotted path, or several joined by commas for a composite key
    (`wiki_id,page.page_id` -> "enwiki:123"): sources of one timeline may name
    the same key differently, as Wikimedia's streams do."""

    model_config = ConfigDict(frozen=True)

    topic: str = Field(min_length=1)
    key_path: str = Field(min_length=1)
    time_path: str = Field(min_length=1)
    # An event platform schema title (mediawiki/page/change): the feeder then
    # validates each event against it, as EventGate does, and drops canaries.
    schema_title: str | None = None


class TimelineSpec(BaseModel):
    """A registered timeline: what to compute, from which sources, how to shard it."""

    model_config = ConfigDict(frozen=True)

    name: str
    expression: str
    sources: tuple[SourceSpec, ...] = Field(min_length=1)
    shards: int = Field(default=4, ge=1, le=1024)
    idle_timeout_s: float = Field(default=1800.0, gt=0)
    # How far (event time) behind a key's latest event an event may still arrive
    # and be applied; an older one is side-output as "late". It bounds what a node
    # keeps per key (README: Bounded state and late events).
    allowed_lateness_s: float = Field(default=DEFAULT_ALLOWED_LATENESS_S, ge=0, le=MAX_ALLOWED_LATENESS_S)
    # The most state a node workflow of this timeline should carry (its continue-as-new
    # input, as Temporal stores it: compressed): past it the node reports
    # "state_over_limit" (GET /timelines/NAME health).
    max_state_bytes: int = Field(default=DEFAULT_MAX_STATE_BYTES, ge=16_384, le=MAX_STATE_BYTES)
    results_topic: str | None = None
    # Which registration under this name: set when it is saved, new each time the name is
    # registered again after a removal. It is part of the workflow ids, and the feeder,
    # the workflows and the store check it, so nothing of a removed registration can
    # come back or write into a new one. "" for registrations made before it existed.
    generation: str = ""

    def same_definition(self, other: "TimelineSpec") -> bool:
        """Equal but for the generation: registering it again changes nothing."""
        return self.model_copy(update={"generation": other.generation}) == other
    # Where this timeline starts reading its topics: None, live (with the shared feeder, from where
    # it is); "earliest", all the topic retains; or an epoch-ms time (messages published from then on).
    # A start other than live gives the timeline a subscription of its own (feeder/backfill.py).
    start_from: Literal["earliest"] | int | None = None

    @property
    def allowed_lateness_ms(self) -> int:
        return int(self.allowed_lateness_s * 1000)

    @property
    def plan(self) -> Plan:
        """The compiled expression (compiled once per expression text in a process), with the
        group-by leaf when it aggregates (`dsl.aggregate.runtime_plan`)."""
        return runtime_plan(self.expression)

    @property
    def aggregated(self) -> bool:
        return self.plan.aggregation is not None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_PATTERN.match(v):
            raise ValueError("a timeline name is 1-63 characters of a-z, 0-9, '-' and '_', starting with a letter "
                             "or digit")
        return v

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        """Accept the single-source form: source_topic, key_path, time_path."""
        if isinstance(data, dict) and "sources" not in data and "source_topic" in data:
            data = dict(data)
            data["sources"] = [{"topic": data.pop("source_topic"), "key_path": data.pop("key_path", ""),
                                "time_path": data.pop("time_path", "")}]
        return data

    @computed_field  # the first source's, so single-source clients read what they wrote
    @property
    def source_topic(self) -> str:
        return self.sources[0].topic

    @computed_field  # the first source's, so single-source clients read what they wrote
    @property
    def key_path(self) -> str:
        return self.sources[0].key_path

    @computed_field  # the first source's, so single-source clients read what they wrote
    @property
    def time_path(self) -> str:
        return self.sources[0].time_path

    def describe_sources(self) -> str:
        return "; ".join(f"topic {s.topic} (key {s.key_path}, time {s.time_path}"
                         + (f", schema {s.schema_title})" if s.schema_title else ")") for s in self.sources)

    @property
    def results_topic_name(self) -> str:
        return self.results_topic or f"timeline-results-{self.name}"


def shard_of(key: str, shards: int) -> int:
    """A key's shard: stable across processes and restarts (not Python's hash)."""
    return zlib.crc32(key.encode()) % shards


def node_workflow_id(spec: TimelineSpec, node_id: str, shard: int) -> str:
    """`timeline/NAME/GENERATION/NODE/SHARD`: a registration's own workflows, so a removed
    one's cannot be signalled back to life under a new registration of the name."""
    if not spec.generation:
        return f"timeline/{spec.name}/{node_id}/{shard}"
    return f"timeline/{spec.name}/{spec.generation}/{node_id}/{shard}"


def new_generation() -> str:
    return uuid.uuid4().hex[:8]


def partition_name(topic: str, partition: int) -> str:
    """Where a message position is ordered: a topic, or one partition of a partitioned topic."""
    return topic if partition < 0 else f"{topic}#{partition}"


class PartitionApplied(BaseModel):
    """The message positions a leaf applied in one topic partition, bounded.

    `recent` holds the last DEDUPE_WINDOW positions applied (sorted); every position
    at or before `floor` counts as applied."""

    floor: tuple[int, int, int] | None = None
    recent: list[tuple[int, int, int]] = []


class AppliedPositions:
    """A leaf's exactly-once filter: has this message position been applied already?

    Per partition (positions are ordered only within one): a set of the recent
    positions applied and a floor below them. Duplicates within one signal, across
    signals, redelivered in any order, are recognised; the state stays bounded
    (DEDUPE_WINDOW positions per partition) across continue-as-new. A position that
    was never applied but arrives after DEDUPE_WINDOW later ones of its partition
    would count as applied: with the feeder's ordered (failover) subscription, first
    deliveries come in order, so only redeliveries ever arrive that late."""

    def __init__(self, saved: dict[str, PartitionApplied] | None = None):
        self.floors: dict[str, tuple[int, int, int] | None] = {}
        self.recent: dict[str, set[tuple[int, int, int]]] = {}
        for name, part in (saved or {}).items():
            self.floors[name] = tuple(part.floor) if part.floor is not None else None
            self.recent[name] = {tuple(p) for p in part.recent}

    def first_time(self, partition: str, position: tuple[int, int, int]) -> bool:
        """True, and remembered, if `position` was not applied before."""
        floor = self.floors.get(partition)
        if floor is not None and position <= floor:
            return False
        seen = self.recent.get(partition)
        if seen is None:
            seen = self.recent[partition] = set()
        if position in seen:
            return False
        seen.add(position)
        if len(seen) > 2 * DEDUPE_WINDOW:  # trimmed in bulk: amortised O(1) per event
            self._trim(partition, DEDUPE_WINDOW)
        return True

    def _trim(self, partition: str, keep: int) -> None:
        self.floors[partition], kept = self._trimmed(partition, keep)
        self.recent[partition] = set(kept)

    def _trimmed(self, partition: str, keep: int):
        ordered = sorted(self.recent[partition])
        if len(ordered) <= keep:
            return self.floors.get(partition), ordered
        return ordered[-keep - 1], ordered[-keep:]

    def saved(self) -> dict[str, PartitionApplied]:
        """What to carry into the next run (changes nothing here: a query may call it)."""
        out = {}
        for name in self.recent:
            floor, kept = self._trimmed(name, DEDUPE_WINDOW)
            out[name] = PartitionApplied(floor=floor, recent=kept)
        return out


def partial_aggregate_workflow_id(spec: TimelineSpec, shard: int) -> str:
    return node_workflow_id(spec, "aggregate-partial", shard)


def aggregate_workflow_id(spec: TimelineSpec) -> str:
    """One per registration, like the node workflows (its generation in the id)."""
    base = f"timeline/{spec.name}" + (f"/{spec.generation}" if spec.generation else "")
    return f"{base}/aggregate"


def aggregate_destinations(spec: TimelineSpec, node_id: str, shard: int) -> list[str]:
    """Where a node's patches go besides its parents: an aggregated timeline's root (the values) and
    group-by leaf (the groups) feed their shard's partial aggregate."""
    plan = spec.plan
    if plan.aggregation is None or node_id not in (plan.root, group_leaf_id(plan)):
        return []
    return [partial_aggregate_workflow_id(spec, shard)]


class SourcePosition(BaseModel):
    """Where an event came from: its topic and message id, ordered as published."""

    model_config = ConfigDict(frozen=True)

    topic: str
    ledger: int
    entry: int
    batch: int = -1

    def order(self) -> tuple[int, int, int]:
        return (self.ledger, self.entry, self.batch)


class EventBatchSignal(BaseModel):
    """Events of one shard for one leaf: one signal, however many keys.

    `positions[i]` is event i's message position (ledger, entry, batch index) in
    partition `partitions[i]` of `topic` (-1, or no `partitions`: not partitioned).
    A leaf applies each position once (AppliedPositions), so a message redelivered,
    within a signal or across signals, in any order, changes nothing.
    `generation` is the registration's the feeder routed it for: a leaf of another
    generation drops the batch ("" : not said; the workflow id has it anyway)."""

    topic: str
    positions: list[tuple[int, int, int]]
    partitions: list[int] = []
    events: EventBatch
    generation: str = ""


class PatchSignal(BaseModel):
    """A child node's span changes for one parent, in one signal per batch."""

    child: str                      # the child's node id
    seq: int                        # the child's batch counter: a parent ignores seq it has applied
    patches: list[SpanPatch]
    watermarks: dict[str, int] = {}  # latest event time per key, from the leaves
    closed: list[str] = []          # keys the child closed (idle)


def signal_budget(spec: TimelineSpec) -> int:
    """The most bytes a node puts in one signal to another workflow. Temporal refuses a payload
    over its blob size limit (`limit.blobSize.error`, 2 MB by default), and a node cannot ask the
    server what it is: the registration's `max_state_bytes` says it (a node carries at most 1.5
    times that into continue-as-new, so the server's limit must be above that), and no signal
    is larger than the state a node may carry."""
    return min(MAX_SIGNAL_BYTES, spec.max_state_bytes)


def _json_bytes(model: BaseModel) -> int:
    return len(model.__pydantic_serializer__.to_json(model))


def _cut_patch(patch: SpanPatch, room: int) -> list[SpanPatch]:
    """One key's patch as consecutive patches within `room` bytes each. Part i > 0 begins
    where its first span begins ("from there on, these spans"): applied one after another
    they turn a timeline into what the whole patch does (KeyTimeline.with_patch)."""
    size = _json_bytes(patch)
    n = len(patch.starts)
    if size <= room or n <= 1:
        return [patch]  # a single span larger than `room`: an event value past the budget; sent as is
    per_span = max(1, size // n)
    step = max(1, min(n - 1, room // per_span))
    while True:
        parts = []
        for lo in range(0, n, step):
            hi = lo + step
            parts.append(SpanPatch.model_construct(
                key=patch.key, since=patch.since if lo == 0 else patch.starts[lo], starts=patch.starts[lo:hi],
                values=patch.values[lo:hi], slopes=None if patch.slopes is None else patch.slopes[lo:hi]))
        if step == 1 or all(_json_bytes(p) <= room for p in parts):
            return parts
        step = max(1, step // 2)


def split_patch_signal(signal: PatchSignal, max_bytes: int) -> list[PatchSignal]:
    """The signal as one or more consecutive signals of at most `max_bytes` of JSON each, with
    seq, seq + 1, ...: the patches in order (one too large for a signal is cut into consecutive
    patches of its key), then the watermarks and closed keys, which a receiver must get after
    every patch. Pure and deterministic (a workflow calls it)."""
    if _json_bytes(signal) <= max_bytes:
        return [signal]
    # What one signal takes besides its items (the seq written out in full), and a margin for
    # the separators between items.
    room = max_bytes - _json_bytes(PatchSignal(child=signal.child, seq=2**62, patches=[])) - 64
    if room < 1024:
        raise ValueError(f"a signal budget of {max_bytes} bytes leaves no room for a patch")
    parts: list[PatchSignal] = []
    patches: list[SpanPatch] = []
    watermarks: dict[str, int] = {}
    closed: list[str] = []
    used = 0

    def flush() -> None:
        nonlocal patches, watermarks, closed, used
        if patches or watermarks or closed:
            parts.append(PatchSignal(child=signal.child, seq=signal.seq + len(parts), patches=patches,
                                     watermarks=watermarks, closed=closed))
        patches, watermarks, closed, used = [], {}, [], 0

    def room_for(size: int) -> None:
        nonlocal used
        if used + size > room:
            flush()
        used += size

    for patch in signal.patches:
        for part in _cut_patch(patch, room - 1):
            room_for(_json_bytes(part) + 1)
            patches.append(part)
    for key, wm in signal.watermarks.items():
        room_for(len(json.dumps(key, ensure_ascii=False).encode()) + len(str(wm)) + 2)
        watermarks[key] = wm
    for key in signal.closed:
        room_for(len(json.dumps(key, ensure_ascii=False).encode()) + 1)
        closed.append(key)
    flush()
    return parts


class NodeInput(BaseModel):
    """What a node workflow starts (or continues as new) with."""

    spec: TimelineSpec
    node_id: str
    shard: int
    leaf_state: LeafSnapshot | None = None
    derived_state: DerivedSnapshot | None = None
    applied: dict[str, tuple[int, int, int]] = {}   # leaf, before exactly-once: last position per topic (read once)
    applied_positions: dict[str, PartitionApplied] = {}  # leaf: positions applied per topic partition
    child_seq: dict[str, int] = {}                  # derived: last applied seq per child
    child_watermarks: dict[str, dict[str, int]] = {}  # derived: key -> child -> watermark
    seq: int = 0                                    # this node's batch counter
    events_applied: int = 0                         # leaf: events applied, over all runs (never twice)
    duplicates_skipped: int = 0                     # leaf: redelivered events recognised and skipped
    events_rejected: int = 0                        # events or batches that could not be applied (logged)
    largest_carried_bytes: int = 0                  # the largest continue-as-new input so far (bytes)
    watermarks: dict[str, int] = {}
    last_seen: dict[str, float] = {}                # key -> workflow time (s) of its last change
    continue_as_new_after: int | None = None        # batches per run (tests); None: when Temporal suggests


class RegistrationCheck(BaseModel):
    """Is this registration (name and generation) still the registered one?"""

    name: str
    generation: str


class ResultsBatch(BaseModel):
    """What the root hands to the publish activity for one batch."""

    timeline: str
    shard: int
    seq: int
    patches: list[SpanPatch]
    watermarks: dict[str, int] = {}
    closed: dict[str, KeyTimeline] = {}   # final timelines of keys closed in this batch
    results_topic: str
    generation: str = ""                  # the registration's: the store skips another generation's batch


class LateBatch(BaseModel):
    """Events a leaf did not apply, for the side output: `reason` is "late" (older than
    the key's watermark minus the allowed lateness)."""

    timeline: str
    shard: int
    node_id: str
    reason: str
    events: list[LateEvent]
    topic: str


def side_output_topic(spec: TimelineSpec) -> str:
    """Where a timeline's late (and over-capacity) events go."""
    return f"{spec.results_topic_name}-late"


class NodeStatus(BaseModel):
    """A node workflow's answer to the `status` query."""

    node_id: str
    shard: int
    keys: int
    seq: int
    batches_applied: int
    events_applied: int
    state_bytes: int              # the state's JSON
    run_batches: int
    duplicates_skipped: int = 0
    events_rejected: int = 0
    generation: str = ""
    late_events: int = 0          # leaf: events side-output as late (older than the allowed lateness)
    payload_bytes: int = 0        # the state as Temporal would store it (compressed): what the limit counts
    max_state_bytes: int = 0      # the registration's limit on payload_bytes
    largest_carried_bytes: int = 0  # the largest state carried into continue-as-new so far (as stored)
    health: str = "ok"            # "ok", or "state_over_limit" (more live keys than the shard holds)


class KeyAnswer(BaseModel):
    """A node's timeline of one key, with its watermark (final up to it)."""

    key: str
    node_id: str
    timeline: KeyTimeline
    watermark: int | None = None
    closed: bool = False


class PartialAggregateInput(BaseModel):
    """What a shard's partial aggregate workflow starts (or continues as new) with."""

    spec: TimelineSpec
    shard: int
    values: dict[str, KeyTimeline] = {}     # live keys' root timelines
    groups: dict[str, KeyTimeline] = {}     # live keys' group-by timelines
    closed: AggregateSeries = AggregateSeries()  # the folded series of the shard's closed keys
    child_seq: dict[str, int] = {}          # last applied seq per child node (root, group leaf)
    seq: int = 0                            # this workflow's sends to the combiner
    keys_closed: int = 0


class PartialAggregateSignal(BaseModel):
    """A shard's partial aggregate changed from `since` on (on [since, +inf) it is now `series`), or
    only its key counts did (`since` None: keys closed). The combiner applies them in seq order and
    skips a seq it has applied."""

    shard: int
    seq: int
    since: int | None
    series: AggregateSeries
    live_keys: int = 0
    closed_keys: int = 0


class ShardAggregate(BaseModel):
    """What the combiner keeps of one shard: its whole series, as of the last seq applied."""

    seq: int = 0
    series: AggregateSeries = AggregateSeries()
    live_keys: int = 0
    closed_keys: int = 0


class AggregateInput(BaseModel):
    """What the combining aggregate workflow starts (or continues as new) with."""

    spec: TimelineSpec
    shards: dict[int, ShardAggregate] = {}


class AggregateQuery(BaseModel):
    """The times an aggregate query asks about (`dsl.aggregate.answer_times`)."""

    t: int | None = None
    frm: int | None = None
    to: int | None = None
    step: int | None = None


class AggregatePoint(BaseModel):
    t: int
    groups: dict[str, dict[str, Any]]


class AggregateAnswer(BaseModel):
    """The combiner's answer to its `groups` query."""

    timeline: str
    points: list[AggregatePoint]
    truncated: bool = False
    shards_reported: int
    shards: int
    live_keys: int
    closed_keys: int
