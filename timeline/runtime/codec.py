"""Payload compression for everything the runtime sends through Temporal.

Temporal writes every signal, activity input and result, and continue-as-new
state into workflow history, and sends it again to the worker that runs the
workflow. The runtime's payloads are JSON of keys and 13-digit times, which
zlib (level 1: fast) shrinks four to five times, so the server stores and ships
a fraction of the bytes (measured by `bench.streaming`: its CPU is most of the
machine's at load). Small payloads are left as they are: compressing them saves
little. Decoding passes any payload without the encoding through unchanged, so
histories written before this codec still replay; every process that talks to
the runtime's workflows must use it (`timeline.runtime.control.connect` does).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

ENCODING = b"binary/zlib"
# Below this (serialised) size a payload is sent as it is.
MIN_COMPRESSED_BYTES = 2048


class CompressionCodec(PayloadCodec):
    """zlib over the whole serialised payload (its metadata too), marked by its encoding."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [compress(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [decompress(p) for p in payloads]


def compress(payload: Payload) -> Payload:
    if payload.ByteSize() < MIN_COMPRESSED_BYTES:
        return payload
    raw = payload.SerializeToString()
    packed = zlib.compress(raw, 1)
    if len(packed) >= len(raw):
        return payload
    return Payload(metadata={"encoding": ENCODING}, data=packed)


def stored_size(data: bytes) -> int:
    """About the bytes Temporal stores for a payload of this JSON (what its payload limit
    counts): compressed as `compress` would, give or take the payload's metadata."""
    if len(data) < MIN_COMPRESSED_BYTES:
        return len(data)
    return min(len(data), len(zlib.compress(data, 1)))


def decompress(payload: Payload) -> Payload:
    if payload.metadata.get("encoding") != ENCODING:
        return payload
    return Payload.FromString(zlib.decompress(payload.data))


# The runtime's converter: pydantic models as JSON, compressed when large.
DATA_CONVERTER: DataConverter = dataclasses.replace(pydantic_data_converter, payload_codec=CompressionCodec())
