"""The API's request and response bodies (its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from timeline.dsl.limits import DEFAULT_ALLOWED_LATENESS_S, DEFAULT_MAX_STATE_BYTES
from timeline.models import TimelineSpec

# --- response models ------------------------------------------------------------------------

class ErrorBody(BaseModel):
    """Every 4xx/5xx answer. DSL errors also say where (line, column) and what was expected."""

    error: str = Field(description="what is wrong and how to fix it")
    kind: str | None = Field(None, description="DSL errors: syntax error, type error, unknown operator, ...")
    line: int | None = None
    column: int | None = None
    expected: str | None = None
    detail: str | None = Field(None, description="DSL errors: the message with the expression and a caret")


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str
    key_path: str
    time_path: str


class RegisterIn(BaseModel):
    """A timeline to register: what to compute, from which topic, how to shard it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "cir", "expression": 'duration_where(has_existed(playerStateChange == "play") && '
                                     '!has_existed_within(playerStateChange == "seek", 5s) && '
                                     'latest_event_to_state(playerStateChange) == "buffer")',
        "source_topic": "video-events", "key_path": "session_id", "time_path": "ts", "shards": 4,
        "idle_timeout_s": 1800}]})

    name: str = Field(description="1-63 characters of a-z, 0-9, '-' and '_'")
    expression: str = Field(description="a timeline expression (see the README)")
    source_topic: str | None = Field(None, description="the Pulsar topic the feeder reads (one source)")
    key_path: str | None = Field(None, description="dotted path of the key in an event (session_id, "
                                                   "page.page_id); comma-joined paths make a composite key")
    time_path: str | None = Field(None, description="dotted path of the event time (ts, meta.dt)")
    sources: list[SourceIn] | None = Field(None, description="several sources, each with its topic, key and "
                                                             "time paths (instead of source_topic/key_path/time_path)")
    shards: int = Field(4, description="key shards (1-1024): one workflow per plan node per shard")
    idle_timeout_s: float = Field(1800.0, description="close a key after this many seconds without events")
    start_from: str | None = Field(None, description="where the timeline starts reading: live (the default: "
                                                     "from where the shared feeder is), earliest (replay what the "
                                                     "topic retains, then live), or a time (epoch ms or ISO-8601)")
    allowed_lateness_s: float = Field(DEFAULT_ALLOWED_LATENESS_S, description=(
        "apply an event up to this many seconds (event time) behind its key's latest event; an older one is "
        "side-output as late and counted"))
    max_state_bytes: int = Field(DEFAULT_MAX_STATE_BYTES, description=(
        "the most state one node workflow should carry; past it the timeline's health says state_over_limit "
        "(register with more shards)"))


class PlanNodeOut(BaseModel):
    id: str
    op: str = Field(description="operator class: HasExisted, Compare, DurationWhere, ...")
    kind: str = Field(description="state, boolean or numeric")
    leaf: bool = Field(description="true: reads events; false: reads its children's timelines")
    children: list[str]
    label: str = Field(description="canonical text of the sub-expression")


class PlanOut(BaseModel):
    root: str
    nodes: list[PlanNodeOut] = Field(description="children before parents; shared sub-expressions once")
    aggregation: str | None = None


class WorkflowOut(BaseModel):
    workflow_id: str
    node_id: str
    shard: int
    leaf: bool
    children: list[str] = Field(description="workflow ids of the children (same shard)")
    label: str


class TimelineOut(BaseModel):
    """A registration, its plan and the workflow ids of its tree (nodes x shards)."""

    spec: TimelineSpec
    plan: PlanOut
    workflows: list[WorkflowOut]


class RegisteredOut(TimelineOut):
    created: bool = Field(description="false: the same registration existed (its workflows were checked)")


class TimelineListOut(BaseModel):
    timelines: list[TimelineSpec]
    count: int


class RemovedOut(BaseModel):
    name: str
    workflows_stopped: int
    message: str


class KeysOut(BaseModel):
    timeline: str
    closed: bool | None = Field(description="the filter asked for: true, false, or null (all keys)")
    keys: list[str]
    count: int


class StateSpanOut(BaseModel):
    """A span of a state or boolean timeline: [start, end) -> value (end null: open; value null: unknown)."""

    model_config = ConfigDict(extra="forbid")

    start: int
    end: int | None
    value: Any
    provisional: bool = Field(description="true: past the key's watermark (or open), later events may change it")


class NumericSpanOut(BaseModel):
    """A span of a numeric timeline: the value at start and its change per ms (durations in ms)."""

    model_config = ConfigDict(extra="forbid")

    start: int
    end: int | None
    value: int | float | None
    slope: int | float | None
    provisional: bool = Field(description="true: past the key's watermark (or open), later events may change it")


SpanOut = NumericSpanOut | StateSpanOut
Source = Literal["live", "store"]


class KeyTimelineOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    timeline: str
    key: str
    node_id: str = Field(description="the root node")
    kind: str = Field(description="state, boolean or numeric")
    source: Source = Field(description="live: queried from the root workflow; store: the results store")
    closed: bool = Field(description="the key went idle: its timeline is final")
    watermark: int | None = Field(description="latest event time seen for the key: final up to it")
    from_: int | None = Field(None, alias="from")
    to: int | None = None
    spans: list[SpanOut]


class ValueOut(BaseModel):
    timeline: str
    key: str
    t: int
    value: Any = Field(description="the value at t (numeric timelines evaluated at t); null: unknown")
    kind: str
    source: Source
    closed: bool
    watermark: int | None
    provisional: bool = Field(description="t is past the key's watermark: later events may change the value")


class TreeNodeOut(BaseModel):
    node_id: str
    workflow_id: str
    op: str
    kind: str
    label: str
    leaf: bool
    children: list[str] = Field(description="node ids this node reads")
    held: bool = Field(description="the node workflow holds the key (false: not reached yet, or released)")
    watermark: int | None
    spans: list[SpanOut]


class TreeOut(BaseModel):
    """Every node's timeline of the key (root first), to explain the root's result."""

    timeline: str
    key: str
    shard: int
    root: str
    closed: bool
    note: str | None = None
    nodes: list[TreeNodeOut]
