"""The data that crosses process boundaries in the durable runtime, and the
id builders: one module, so the worker, feeder, API and CLI agree."""

from __future__ import annotations

import re
import zlib
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_validator,
    model_validator,
)

from timeline.dsl.compiler import Plan, plan_for
from timeline.dsl.limits import (
    DEFAULT_ALLOWED_LATENESS_S,
    DEFAULT_MAX_STATE_BYTES,
    MAX_ALLOWED_LATENESS_S,
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
    # input): past it the node reports "state_over_limit" (GET /timelines/NAME health).
    max_state_bytes: int = Field(default=DEFAULT_MAX_STATE_BYTES, ge=16_384, le=MAX_STATE_BYTES)
    results_topic: str | None = None

    @property
    def allowed_lateness_ms(self) -> int:
        return int(self.allowed_lateness_s * 1000)

    @property
    def plan(self) -> Plan:
        """The compiled expression (compiled once per expression text in a process)."""
        return plan_for(self.expression)

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


def node_workflow_id(timeline: str, node_id: str, shard: int) -> str:
    return f"timeline/{timeline}/{node_id}/{shard}"


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

    `positions[i]` is event i's message position (ledger, entry, batch index)
    in `topic`; a leaf skips events at or before the last position it applied,
    so a batch redelivered after a crash changes nothing."""

    topic: str
    positions: list[tuple[int, int, int]]
    events: EventBatch


class PatchSignal(BaseModel):
    """A child node's span changes for one parent, in one signal per batch."""

    child: str                      # the child's node id
    seq: int                        # the child's batch counter: a parent ignores seq it has applied
    patches: list[SpanPatch]
    watermarks: dict[str, int] = {}  # latest event time per key, from the leaves
    closed: list[str] = []          # keys the child closed (idle)


class NodeInput(BaseModel):
    """What a node workflow starts (or continues as new) with."""

    spec: TimelineSpec
    node_id: str
    shard: int
    leaf_state: LeafSnapshot | None = None
    derived_state: DerivedSnapshot | None = None
    applied: dict[str, tuple[int, int, int]] = {}   # leaf: last applied position per topic
    child_seq: dict[str, int] = {}                  # derived: last applied seq per child
    child_watermarks: dict[str, dict[str, int]] = {}  # derived: key -> child -> watermark
    seq: int = 0                                    # this node's batch counter
    events_applied: int = 0                         # leaf: events applied, over all runs (never twice)
    largest_carried_bytes: int = 0                  # the largest continue-as-new input so far (bytes)
    watermarks: dict[str, int] = {}
    last_seen: dict[str, float] = {}                # key -> workflow time (s) of its last change
    continue_as_new_after: int | None = None        # batches per run (tests); None: when Temporal suggests


class ResultsBatch(BaseModel):
    """What the root hands to the publish activity for one batch."""

    timeline: str
    shard: int
    seq: int
    patches: list[SpanPatch]
    watermarks: dict[str, int] = {}
    closed: dict[str, KeyTimeline] = {}   # final timelines of keys closed in this batch
    results_topic: str


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
    state_bytes: int
    run_batches: int
    late_events: int = 0          # leaf: events side-output as late (older than the allowed lateness)
    max_state_bytes: int = 0      # the registration's limit on state_bytes
    largest_carried_bytes: int = 0  # the largest state carried into continue-as-new so far
    health: str = "ok"            # "ok", or "state_over_limit" (more live keys than the shard holds)


class KeyAnswer(BaseModel):
    """A node's timeline of one key, with its watermark (final up to it)."""

    key: str
    node_id: str
    timeline: KeyTimeline
    watermark: int | None = None
    closed: bool = False
