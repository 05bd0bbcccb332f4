"""The runtime's payload codec: large payloads compressed, small ones and old ones as they are."""

from __future__ import annotations

import asyncio

from temporalio.api.common.v1 import Payload

from timeline.dsl.incremental import EventBatch
from timeline.models import EventBatchSignal
from timeline.runtime.codec import (
    DATA_CONVERTER,
    ENCODING,
    MIN_COMPRESSED_BYTES,
    CompressionCodec,
    stored_size,
)


def _signal(n: int) -> EventBatchSignal:
    return EventBatchSignal(topic="t", positions=[(1, i, -1) for i in range(n)],
                            events=EventBatch(keys=[f"s{i % 50:04d}" for i in range(n)],
                                              times=[1_700_000_000_000 + 250 * i for i in range(n)],
                                              columns={"state": [("play", "buffer", None)[i % 3] for i in range(n)]}))


def _roundtrip(value, type_hint):
    async def go():
        payloads = await DATA_CONVERTER.encode([value])
        return payloads, await DATA_CONVERTER.decode(payloads, [type_hint])

    return asyncio.run(go())


def test_a_large_payload_is_stored_compressed_and_reads_back_equal():
    signal = _signal(2000)
    payloads, (back,) = _roundtrip(signal, EventBatchSignal)
    assert payloads[0].metadata["encoding"] == ENCODING
    raw = len(signal.model_dump_json())
    assert len(payloads[0].data) * 3 < raw  # JSON of keys and times: several times smaller
    assert back == signal


def test_a_small_payload_is_left_as_it_is():
    payloads, (back,) = _roundtrip(_signal(2), EventBatchSignal)
    assert payloads[0].metadata["encoding"] == b"json/plain"
    assert back == _signal(2)


def test_a_payload_written_without_the_codec_still_decodes():
    """Histories from before the codec replay: a payload without its encoding passes through."""
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"a": 1}')
    assert asyncio.run(CompressionCodec().decode([plain])) == [plain]


def test_stored_size_is_what_the_codec_stores():
    data = _signal(2000).model_dump_json().encode()
    payload = asyncio.run(CompressionCodec().encode([Payload(metadata={"encoding": b"json/plain"}, data=data)]))[0]
    assert abs(stored_size(data) - len(payload.data)) < 64
    small = b"x" * (MIN_COMPRESSED_BYTES - 1)
    assert stored_size(small) == len(small)
