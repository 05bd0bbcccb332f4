"""Timeline: durable time-state analytics.

The Python API, for notebooks and scripts (no server needed):

    import timeline
    spans = timeline.evaluate('has_existed(playerStateChange == "buffer")', df,
                              key="session_id", time="ts")

See `timeline.frames.evaluate` for the arguments. Importing `timeline` loads
nothing else: the evaluator (numpy, pyarrow) is imported on first use, and
the runtime (Temporal, Pulsar) only by the parts that serve timelines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from timeline.dsl.errors import TimelineError
    from timeline.frames import evaluate

__all__ = ["evaluate", "TimelineError"]


def __getattr__(name: str) -> Any:
    # Lazy: `import timeline` must stay light (PEP 562).
    if name == "evaluate":
        from timeline.frames import evaluate

        return evaluate
    if name == "TimelineError":
        from timeline.dsl.errors import TimelineError

        return TimelineError
    raise AttributeError(f"module 'timeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
