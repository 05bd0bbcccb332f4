"""The one Pulsar adapter: every client, producer and their errors are made here.

pulsar-client is imported lazily, so the pure layers and the commands that do
not talk to Pulsar never load its C++ library.
"""

from __future__ import annotations

import os

from timeline.dsl.errors import TimelineError

DEFAULT_CONNECT_TIMEOUT_S = 10.0


class PulsarUnavailable(TimelineError):
    """Pulsar cannot be reached, or refuses the producer."""

    def __init__(self, message: str, reason: str = "", unreachable: bool = False):
        self.reason = reason or message
        self.unreachable = unreachable  # no broker answered (as opposed to a refusal)
        super().__init__(message)


class ProduceError(TimelineError):
    """Pulsar did not accept some of the messages that were sent."""


def open_client(url: str, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S, verbose: bool = False):
    """A `pulsar.Client` for `url` whose lookups and producer creation give up after `timeout_s`.

    The client connects lazily: an unreachable broker shows up when a producer
    or consumer is created. Close the client explicitly when done.

    The C++ client's own log is discarded unless `verbose` (then: info and up on
    stderr): every failure that matters is reported by the caller, and against a
    missing broker it would print a line per connection retry before the actual
    error. It is deliberately not routed through a Python `logging.Logger`: with
    one, about one process exit in three aborted ("terminate called without an
    active exception", SIGABRT) in our runs, even with everything closed.
    """
    import pulsar

    if verbose:
        logger = pulsar.ConsoleLogger(pulsar.LoggerLevel.Info)
    else:
        logger = pulsar.FileLogger(pulsar.LoggerLevel.Error, os.devnull)
    try:
        return pulsar.Client(url, operation_timeout_seconds=max(1, round(timeout_s)),
                             connection_timeout_ms=max(100, int(timeout_s * 1000 / 2)), logger=logger)
    except Exception as exc:  # ValueError for a malformed URL, PulsarException otherwise
        raise PulsarUnavailable(f"{url!r} is not a usable Pulsar service URL ({exc}); pass --pulsar "
                                "pulsar://HOST:PORT", str(exc)) from None


def describe(exc: BaseException) -> str:
    """A Pulsar exception as one line: its class and message."""
    name = type(exc).__name__
    text = str(exc).removeprefix("Pulsar error: ")
    return f"{name}: {text}" if text and text.lower() != name.lower() else name


def create_producer(client, topic: str, **options):
    """A batching producer on `topic`; PulsarUnavailable (saying why) when the broker refuses or is away."""
    import pulsar

    options.setdefault("batching_enabled", True)
    options.setdefault("block_if_queue_full", True)
    try:
        return client.create_producer(topic, **options)
    except pulsar.PulsarException as exc:
        reason = describe(exc)
        raise PulsarUnavailable(f"cannot create a producer on topic {topic}: {reason}", reason,
                                unreachable=isinstance(exc, (pulsar.Timeout, pulsar.ConnectError))) from None



class SubscriptionBusy(TimelineError):
    """Another process holds the Exclusive subscription (or the broker refused for now): stand by."""


def subscribe_once(client, topic: str, subscription: str, **options):
    """Subscribe once; SubscriptionBusy (saying why) when the broker refuses.

    Several processes may contend for one subscription (feeders standing by). pulsar-lite
    keys the consumers of a subscription by the consumer id the client chose, and every
    client numbers its consumers from 0: a second process with the same ids is refused
    with a protocol error (the connection is dropped) instead of the usual ConsumerBusy,
    and would keep colliding with the holder's ids. So each attempt first uses up a random
    number of ids (subscribing to a throwaway non-persistent topic, about 2 ms each).
    Against Apache Pulsar that costs a few milliseconds and changes nothing else.
    """
    import random

    import pulsar

    try:
        for _ in range(random.randrange(0, 64)):
            client.subscribe(f"non-persistent://public/default/__timeline-consumer-ids-{os.getpid()}",
                             "__timeline-consumer-ids").close()
        return client.subscribe(topic, subscription, **options)
    except pulsar.PulsarException as exc:
        raise SubscriptionBusy(f"subscription {subscription!r} on {topic} is not available ({describe(exc)}): "
                               "another feeder holds it, or the broker cannot be reached") from None
