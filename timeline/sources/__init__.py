"""Sources of events: the Wikimedia event platform (streams, schemas, EventGate) and EventStreams.

`sources.eventplatform` (schemas, validation, the stream registry, keys and times) and
`sources.sse` (the server-sent-events wire format) are pure: no Pulsar, no HTTP.
`sources.ingest` moves EventStreams events into Pulsar with a client it is given, and
`timeline.cli.ingest` is the `timeline ingest-sse` command.
"""
