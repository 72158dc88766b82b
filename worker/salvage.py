"""Records the Kafka client cannot decode: place the failing batch, read it raw, return its records.

aiokafka decodes header keys as UTF-8 (and decompresses) while `getmany` iterates a batch; a key
that is not UTF-8, a missing codec or a corrupt batch raises out of `getmany` with no coordinates,
on every call, for as long as nothing seeks past the batch. `getmany` has by then also advanced
other partitions whose drained records it throws away. `salvage` undoes that:

1. the failing partition and batch end come from aiokafka's `_unpack_records` frame in the
   traceback (the only place that names them);
2. the records `getmany` had already taken from other partitions (their positions moved past
   them) are handed back from the `fetched_records` frame; failing that, those partitions are
   sought back to where they were before the call;
3. the failing partition is read raw from its position to the end of the failing batch with one
   FetchRequest, and parsed here, keeping header keys as bytes; records whose keys are UTF-8 come
   back as normal `Record`s, the others flagged `undecodable` (keys escaped with backslashreplace);
4. the failing partition is sought past the batch.

Everything private to aiokafka (0.14) lives in this module and is guarded: if the raw read or the
parse fails, every offset of the failing range comes back as a coordinates-only flagged record.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.default_records import _DefaultRecordBatchPy
from aiokafka.record.util import decode_varint

from worker.records import Record

log = logging.getLogger(__name__)

# What aiokafka raises out of getmany for a batch it cannot decode (C extension, pure Python).
DECODE_FAILURES = (UnicodeDecodeError, CorruptRecordException, UnsupportedCodecError)
BAD_HEADER_KEY = "header key is not valid UTF-8"
_READ_COMMITTED = 1
_V2_HEADER = 17  # base offset, batch length, leader epoch, magic: enough to split batches


def positions(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """Every assigned partition's valid position, read without a round trip (private state)."""
    try:
        assignment = _private(consumer)._subscription.subscription.assignment
        if assignment is None:
            return {}
        states = ((tp, assignment.state_value(tp)) for tp in assignment.tps)
        return {tp: int(s.position) for tp, s in states if s.has_valid_position}
    except Exception as exc:  # a changed aiokafka: no rewind, the batch is still placed
        log.warning("consumer positions unreadable", extra={"error": type(exc).__name__})
        return {}


@dataclass(frozen=True, slots=True)
class Salvage:
    drained: list[Any]  # aiokafka's records of other partitions, taken before the failure
    records: list[Record]  # the failing partition's, up to the end of the failing batch


async def salvage(
    consumer: AIOKafkaConsumer, exc: BaseException, before: Mapping[TopicPartition, int]
) -> Salvage | None:
    """The records `getmany` failed on, sought past the failing batch; None if not placeable."""
    failing = failing_batch(exc)
    if failing is None:
        return None
    tp, batch_end = failing
    now = positions(consumer)
    drained = _drained(exc)
    if drained is None:  # cannot hand them back: make the consumer fetch them again
        _rewind(consumer, tp, before, now)
    start = now.get(tp)
    if start is None:  # revoked meanwhile: its next owner meets the batch
        return Salvage(drained or [], [])
    records = await _read_range(consumer, tp, start, batch_end, type(exc).__name__)
    consumer.seek(tp, batch_end)
    return Salvage(drained or [], records)


def failing_batch(exc: BaseException) -> tuple[TopicPartition, int] | None:
    """(partition, first offset after the failing batch) from aiokafka's fetcher frame."""
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        if tb.tb_frame.f_code.co_name == "_unpack_records" and "next_batch" in local:
            try:
                return local["tp"], int(local["next_batch"].next_offset)
            except Exception:  # a changed frame: cannot place the batch
                return None
        tb = tb.tb_next
    return None


def _drained(exc: BaseException) -> list[Any] | None:
    """What `fetched_records` had taken from other partitions (positions already past them)."""
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        if tb.tb_frame.f_code.co_name == "fetched_records" and "drained" in local:
            drained = local["drained"]
            if not isinstance(drained, dict):
                return None
            return [m for messages in drained.values() for m in messages]
        tb = tb.tb_next
    return None


def _rewind(
    consumer: AIOKafkaConsumer,
    failing: TopicPartition,
    before: Mapping[TopicPartition, int],
    now: Mapping[TopicPartition, int],
) -> None:
    """getmany advanced these partitions, then dropped their records with the exception."""
    for tp, position in before.items():
        if tp != failing and now.get(tp) not in (None, position):
            log.warning(
                "rewinding a partition whose fetched records were dropped",
                extra={"topic": tp.topic, "partition": tp.partition, "offset": position},
            )
            consumer.seek(tp, position)


async def _read_range(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int, cause: str
) -> list[Record]:
    try:
        raw, aborted = await _fetch_raw(consumer, tp, start)
        records = [r for r in _parse(raw, aborted, tp) if start <= r.offset < end]
    except Exception as exc:  # codec missing, corrupt, or a changed aiokafka: coordinates only
        log.warning(
            "raw re-read of an undecodable batch failed",
            extra={"error": type(exc).__name__, "partition": tp.partition, "offset": start},
        )
        records = []
    if not records:
        reason = f"record could not be decoded ({cause})"
        return [_unreadable(tp, offset, reason) for offset in range(start, end)]
    return records


async def _fetch_raw(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int
) -> tuple[bytes, list[tuple[int, int]]]:
    """The partition's raw fetch data at `offset`, and its aborted transactions (pid, first)."""
    inner = _private(consumer)
    size = inner._fetcher._max_partition_fetch_bytes
    node = inner._client.cluster.leader_for_partition(tp)
    request = FetchRequest(
        0, 1, size, _READ_COMMITTED, [(tp.topic, [(tp.partition, offset, size)])]
    )
    response = await inner._client.send(node, request)
    _partition, error_code, _highwater, *data = response.topics[0][1][0]
    if error_code != 0:
        raise RuntimeError(f"fetch error code {error_code}")
    aborted = data[-2] if len(data) >= 2 and isinstance(data[-2], list) else []
    return bytes(data[-1]), [(int(p), int(o)) for p, o in aborted or ()]


def _parse(raw: bytes, aborted: list[tuple[int, int]], tp: TopicPartition) -> Iterator[Record]:
    """The records a read_committed consumer would see, header keys kept as bytes (v2 only)."""
    pending = sorted(aborted, key=lambda pair: pair[1])
    aborting: set[int] = set()
    for batch in _batches(raw):
        while pending and pending[0][1] <= batch.base_offset:
            aborting.add(pending.pop(0)[0])
        batch._maybe_uncompress()  # raises when the codec is missing or the data corrupt
        if batch.is_control_batch:
            if any(_is_abort_marker(r.key) for r in _read_records(batch, tp)):
                aborting.discard(batch.producer_id)
            continue
        if batch.is_transactional and batch.producer_id in aborting:
            continue
        yield from _read_records(batch, tp)


def _batches(raw: bytes) -> Iterator[Any]:
    """Split fetch data into pure-Python v2 batches (aiokafka would hand out C ones)."""
    pos = 0
    while pos + _V2_HEADER <= len(raw):
        end = pos + 12 + int.from_bytes(raw[pos + 8 : pos + 12], "big", signed=True)
        if end > len(raw):  # the fetch cut the last batch short
            return
        if raw[pos + 16] == 2:
            yield _DefaultRecordBatchPy(raw[pos:end])
        pos = end


def _read_records(batch: Any, tp: TopicPartition) -> Iterator[Record]:
    buf, pos = batch._buffer, batch._pos
    for _ in range(batch._num_records):
        length, pos = decode_varint(buf, pos)
        end = pos + length
        yield _read_record(batch, buf, pos, tp)
        pos = end


def _read_record(batch: Any, buf: bytearray, pos: int, tp: TopicPartition) -> Record:
    pos = decode_varint(buf, pos)[1]  # record attributes: unused
    ts_delta, pos = decode_varint(buf, pos)
    offset_delta, pos = decode_varint(buf, pos)
    key, pos = _blob(buf, pos)
    value, pos = _blob(buf, pos)
    count, pos = decode_varint(buf, pos)
    headers: list[tuple[bytes, bytes]] = []
    for _ in range(count):
        name, pos = _blob(buf, pos)
        content, pos = _blob(buf, pos)
        headers.append((name or b"", content or b""))
    appended = batch.timestamp_type == 1  # LogAppendTime: the batch's max timestamp
    timestamp = batch.max_timestamp if appended else batch.first_timestamp + ts_delta
    return Record(
        topic=tp.topic,
        partition=tp.partition,
        offset=batch.base_offset + offset_delta,
        key=key,
        value=value,
        headers=tuple((n.decode("utf-8", "backslashreplace"), c) for n, c in headers),
        timestamp_ms=timestamp,
        undecodable=None if all(_utf8(n) for n, _ in headers) else BAD_HEADER_KEY,
    )


def _blob(buf: bytearray, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(buf, pos)
    return (None, pos) if size < 0 else (bytes(buf[pos : pos + size]), pos + size)


def _is_abort_marker(key: bytes | None) -> bool:
    # Control record key: version (int16), type (int16); type 0 is ABORT.
    return key is not None and len(key) >= 4 and int.from_bytes(key[2:4], "big") == 0


def _utf8(name: bytes) -> bool:
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _unreadable(tp: TopicPartition, offset: int, reason: str) -> Record:
    return Record(tp.topic, tp.partition, offset, None, None, undecodable=reason)


def _private(consumer: AIOKafkaConsumer) -> Any:
    """The consumer as an untyped object: the attributes read here are aiokafka 0.14's own."""
    return consumer
