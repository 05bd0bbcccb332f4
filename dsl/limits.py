"""The documented limits on what Timeline accepts, in one place.

Every part that takes input from outside (the DSL parser, `timeline eval`, the
feeder, the API) checks against these, so nothing past them can reach the
algebra or a workflow and fail there. Past a limit, input is rejected with a
clear error (a positioned DSL error, a dead-lettered event with its reason, a
413/400 from the API), never a traceback.
"""

from __future__ import annotations

# Event times, in epoch ms: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z
# (what ISO-8601 can write). Keeps every sum of a time and a window inside int64.
MIN_TIME_MS = -62_135_596_800_000
MAX_TIME_MS = 253_402_300_799_999

# Integers in events and constants fit int64; floats are finite.
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1

# One event (one Pulsar message, one JSON line): size and nesting depth.
MAX_EVENT_BYTES = 1_048_576
MAX_EVENT_DEPTH = 64

# One expression: its text, its nesting, one string constant in it.
MAX_EXPRESSION_CHARS = 100_000
MAX_EXPRESSION_DEPTH = 200
MAX_STRING_CONSTANT_CHARS = 10_000

# Allowed lateness of a registration (event time behind a key's latest event):
# the default, and the most a registration may ask (each node keeps a key's
# events and spans within it, so it bounds the state per key).
DEFAULT_ALLOWED_LATENESS_S = 60.0
MAX_ALLOWED_LATENESS_S = 86_400.0

# A node workflow's state (its continue-as-new input): Temporal refuses payloads
# over 2 MB by default, so a node keeps under half of that (a registration may
# set less, never more than MAX_STATE_BYTES).
DEFAULT_MAX_STATE_BYTES = 1_000_000
MAX_STATE_BYTES = 1_500_000

# One HTTP request body to the API.
MAX_REQUEST_BYTES = 1_048_576

# Temporal refuses payloads over 2 MB (its default blob size error limit); a signal's
# encoded batch is kept well under it, and a node's continue-as-new state too.
MAX_SIGNAL_BYTES = 512 * 1024

# The feeder: a message delivered this many times without being applied goes to the
# dead-letter topic (reason "delivered N times without success"), so one message that
# crashes the feeder, or makes every signal of its batch fail, cannot stop its topic.
MAX_DELIVERIES = 10

# A leaf remembers, per topic partition, the positions of the last DEDUPE_WINDOW
# messages it applied (older ones are summed up by one floor position): the
# duplicates Pulsar redelivers are recognised within that window, and below it.
DEDUPE_WINDOW = 1024
# One aggregate-over-time answer (`GET /timelines/{name}/aggregate?from=&to=`): its points (each a row per
# group; kept well under the size a Temporal query answer may have).
MAX_AGGREGATE_SAMPLES = 2_000
