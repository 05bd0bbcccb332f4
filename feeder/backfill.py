"""Backfill: a timeline that starts from the topic's beginning (or a time) reads with its own subscription.

`register-workflow ... --from earliest|TIME` saves the registration with
`start_from`. The shared feeder of a topic (subscription `timeline-feeder`)
then leaves that timeline alone (`Feeder.feeds`), and the feeder process runs,
next to it, one `OwnSubscriptionFeeder` per such timeline: the same routing,
batching, dead-lettering and acknowledging code (a `Feeder` whose only route is
that timeline), on the durable subscription `timeline-backfill-NAME` created at
the earliest position the topic retains. It replays what the topic holds and
goes on with live messages on the same subscription: there is no hand-over
between two readers, so there is no gap and no overlap to reconcile. Each event
reaches the timeline's leaves from one subscription, in topic order, so the
leaves' skip of positions at or before the last one applied makes a redelivery
change nothing. With a TIME, messages published before it are acknowledged
without being routed (Pulsar's seek by time compares the same publish time).

When the registration is removed, its feeder stops and the subscription is
deleted, so registering the name again replays the topic again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from timeline.feeder.feeder import Feeder, FeederSettings, _Routed
from timeline.models import TimelineSpec

log = logging.getLogger("timeline.feeder.backfill")


def backfill_subscription(timeline: str) -> str:
    return f"timeline-backfill-{timeline}"


class OwnSubscriptionFeeder(Feeder):
    """A feeder for one timeline that does not start live, on its own subscription."""

    def __init__(self, temporal_client, pulsar_client, store, settings: FeederSettings, spec: TimelineSpec):
        own = dataclasses.replace(settings, subscription=backfill_subscription(spec.name))
        super().__init__(temporal_client, pulsar_client, store, own)
        self.spec = spec

    def feeds(self, spec: TimelineSpec) -> bool:
        return spec.name == self.spec.name and spec == self.spec

    def route(self, messages: list):
        """Route only what was published from the start on; the rest is acknowledged with its
        batch, unrouted (the feeder's loop and `process` both route through here)."""
        start = self.spec.start_from
        if isinstance(start, int):
            messages = [m for m in messages if m.publish_timestamp() >= start]
            if not messages:
                return _Routed(ids=[], sends=[])
        return super().route(messages)


@dataclasses.dataclass
class _Running:
    spec: TimelineSpec
    feeder: OwnSubscriptionFeeder
    stop: asyncio.Event
    task: asyncio.Task


class BackfillSupervisor:
    """Runs an `OwnSubscriptionFeeder` for every registration on this topic that does not start live;
    stops it, and deletes its subscription, when the registration goes."""

    def __init__(self, temporal_client, pulsar_client, store, settings: FeederSettings):
        self.temporal, self.pulsar, self.store, self.settings = temporal_client, pulsar_client, store, settings
        self.running: dict[str, _Running] = {}

    def wanted(self) -> dict[str, TimelineSpec]:
        return {s.name: s for s in self.store.list()
                if s.start_from is not None and any(src.topic == self.settings.topic for src in s.sources)}

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.reconcile()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.refresh_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            await asyncio.gather(*(self._stop(name, unsubscribe=False) for name in list(self.running)))

    async def reconcile(self) -> None:
        wanted = self.wanted()
        for name in list(self.running):
            if wanted.get(name) != self.running[name].spec:  # removed, or registered again differently
                await self._stop(name, unsubscribe=True)
        for name, spec in wanted.items():
            if name not in self.running:
                self._start(spec)
            elif self.running[name].task.done():  # it failed: say why, and start it again
                exc = self.running[name].task.exception()
                log.error("the feeder of %s on its own subscription stopped (%r); restarting it", name, exc)
                self.running.pop(name)
                self._start(spec)

    def _start(self, spec: TimelineSpec) -> None:
        feeder = OwnSubscriptionFeeder(self.temporal, self.pulsar, self.store, self.settings, spec)
        stop = asyncio.Event()
        task = asyncio.create_task(feeder.run(stop))
        self.running[spec.name] = _Running(spec, feeder, stop, task)
        log.info("feeding %s from %s on its own subscription %s (from %s)", spec.name, self.settings.topic,
                 feeder.settings.subscription, spec.start_from)

    async def _stop(self, name: str, unsubscribe: bool) -> None:
        running = self.running.pop(name)
        running.stop.set()
        try:
            await running.task
        except Exception as exc:  # noqa: BLE001 - it is being stopped anyway
            log.warning("the feeder of %s stopped with %r", name, exc)
        if unsubscribe:
            await asyncio.get_running_loop().run_in_executor(None, self._unsubscribe,
                                                             running.feeder.settings.subscription)

    def _unsubscribe(self, subscription: str) -> None:
        try:
            consumer = self.pulsar.subscribe(self.settings.topic, subscription)
            consumer.unsubscribe()
            log.info("deleted subscription %s of %s", subscription, self.settings.topic)
        except Exception as exc:  # noqa: BLE001 - a leftover subscription only holds messages
            log.warning("could not delete subscription %s of %s: %r", subscription, self.settings.topic, exc)
