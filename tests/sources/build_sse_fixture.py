"""Build tests/fixtures/eventstreams_page_change.sse, a recording in EventStreams' wire format.

    .venv/bin/python tests/sources/build_sse_fixture.py      # rewrites the fixture

What `GET https://stream.wikimedia.org/v2/stream/<the streams below, comma-separated>`
would send for these events: `:ok`, then per event `event: message`, an `id:` line
(KafkaSSE's position of every subscribed topic-partition: the latest `timestamp`
consumed, `offset: -1` for those not read yet) and one compact `data:` line.

The events (tests/sources/wikimedia/: copies of the schemas' examples and of the two
LiftWing test events) are adapted as EventStreams serves them: `meta.stream` set to the
production stream name (the schema examples use placeholder names), and `meta.topic`,
`meta.partition`, `meta.offset` added as KafkaSSE does. Two extra events: one canary
(`meta.domain: canary`), one invalid (`page.page_id` a string).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "wikimedia" / "examples"
LIFTWING = HERE / "wikimedia" / "liftwing-fixtures"
OUT = HERE.parent / "fixtures" / "eventstreams_page_change.sse"

PAGE_CHANGE = "mediawiki.page_change.v1"
STREAMS = [
    PAGE_CHANGE,
    "mediawiki.page_revert_risk_prediction_change.v1",
    "mediawiki.article_country_prediction_change.v1",
    "mediawiki.cirrussearch.page_weighted_tags_change.rc0",
    "mediawiki.revision-create",
    "mediawiki.revision-score",
    "eventgate-main.error.validation",
]


def _example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def _liftwing(name: str) -> dict:
    return json.loads((LIFTWING / name).read_text())["event"]


def _ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def events() -> list[tuple[str, dict]]:
    """(stream, event) in the order of the recording."""
    wikidata = _liftwing("sample_page_change_event.revertrisk_wikidata.json")
    enwiki = _liftwing("sample_payload.revise_tone_task_generator.json")
    canary = copy.deepcopy(enwiki)
    canary["meta"].update(domain="canary", id="0c5b3cbe-4c07-4e1a-8f4f-6a3f5c1d2e01",
                          dt="2025-10-29T11:06:00.000Z")
    invalid = copy.deepcopy(enwiki)
    invalid["page"]["page_id"] = str(invalid["page"]["page_id"])
    invalid["meta"].update(id="5d0e3a1f-8b2c-4a57-9c1e-2f7b6a9d4c33", dt="2025-10-29T11:07:00.000Z")
    return [
        (PAGE_CHANGE, wikidata),
        (PAGE_CHANGE, enwiki),
        (PAGE_CHANGE, _example("mediawiki__page__change__1.2.0__example0.json")),
        ("mediawiki.page_revert_risk_prediction_change.v1",
         _example("mediawiki__page__prediction_classification_change__1.1.0__example0.json")),
        (PAGE_CHANGE, canary),
        (PAGE_CHANGE, _example("mediawiki__page__change__1.1.0__example0.json")),
        ("mediawiki.article_country_prediction_change.v1",
         _example("mediawiki__page__prediction_classification_change__1.0.0__example0.json")),
        ("mediawiki.cirrussearch.page_weighted_tags_change.rc0",
         _example("development__cirrussearch__page_weighted_tags_change__1.0.0__example0.json")),
        (PAGE_CHANGE, invalid),
        ("mediawiki.revision-create", _example("mediawiki__revision__create__2.0.0__example0.json")),
        ("mediawiki.revision-score", _example("mediawiki__revision__score__3.0.0__example0.json")),
        ("eventgate-main.error.validation", _example("error__2.1.0__example0.json")),
        (PAGE_CHANGE, _example("mediawiki__page__change__1.0.0__example0.json")),
    ]


def build() -> str:
    positions = {f"{dc}.{s}": None for s in STREAMS for dc in ("eqiad", "codfw")}
    offsets = {s: 1000 for s in STREAMS}
    out = [":ok\n\n"]
    for stream, event in events():
        topic = f"eqiad.{stream}"
        meta = event["meta"]
        meta["stream"] = stream
        if "topic" not in meta:  # the real wikidata event has KafkaSSE's fields already
            offsets[stream] += 1
            meta.update(topic=topic, partition=0, offset=offsets[stream])
        positions[meta["topic"]] = _ms(meta["dt"])
        sse_id = [{"topic": t, "partition": 0, **({"timestamp": ts} if ts is not None else {"offset": -1})}
                  for t, ts in positions.items()]
        out.append("event: message\n")
        out.append(f"id: {json.dumps(sse_id, separators=(',', ':'))}\n")
        out.append(f"data: {json.dumps(event, separators=(',', ':'), ensure_ascii=False)}\n\n")
    return "".join(out)


if __name__ == "__main__":
    OUT.write_text(build(), encoding="utf-8")
    print(f"wrote {OUT} ({len(events())} events)")
