"""salvage.py: the tolerant parse of raw batches, and placing a failure (without a broker)."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from worker.salvage import BAD_HEADER_KEY, _parse, failing_batch

TP = TopicPartition("signout.requests", 2)


class RawKey(str):
    """A header key whose wire bytes are arbitrary: the pure-Python builder calls .encode."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawKey:
        made = super().__new__(cls, raw.decode("latin-1"))
        made.raw = raw
        return made

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def batch(base_offset: int, headers: list[list[tuple[str, bytes]]], compression: int = 0) -> bytes:
    builder = _DefaultRecordBatchBuilderPy(2, compression, 0, -1, -1, 0, 1 << 20)
    for i, record_headers in enumerate(headers):
        builder.append(
            i, timestamp=1000 + i, key=b"k%d" % i, value=b"v%d" % i, headers=record_headers
        )
    raw = bytearray(builder.build())
    raw[0:8] = base_offset.to_bytes(8, "big")
    return bytes(raw)


def test_every_record_comes_back_and_only_the_bad_key_is_flagged() -> None:
    raw = batch(10, [[("a", b"1")], [(RawKey(b"\xff\xfe"), b"h"), ("b", b"2")], []])
    raw += batch(13, [[]], compression=1)  # gzip
    records = list(_parse(raw, [], TP))
    assert [r.offset for r in records] == [10, 11, 12, 13]
    assert [r.undecodable for r in records] == [None, BAD_HEADER_KEY, None, None]
    bad = records[1]
    assert (bad.key, bad.value, bad.timestamp_ms) == (b"k1", b"v1", 1001)
    assert bad.headers == (("\\xff\\xfe", b"h"), ("b", b"2"))
    assert (bad.topic, bad.partition) == (TP.topic, TP.partition)


def test_a_batch_cut_short_by_the_fetch_is_left_out() -> None:
    whole, cut = batch(0, [[]]), batch(1, [[("a", b"1")]])
    assert [r.offset for r in _parse(whole + cut[:-3], [], TP)] == [0]


def test_an_exception_not_raised_by_the_fetcher_cannot_be_placed() -> None:
    with pytest.raises(UnicodeDecodeError) as raised:
        b"\xff".decode()
    assert failing_batch(raised.value) is None
