"""The record codec: round trips, torn tails and flipped bits, arbitrary input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from robustmq.store import records
from robustmq.store.records import PRIORITIES, Record, decode_body, encode, encode_tags, scan

texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x1f"), max_size=20
)


def _record(i: int, payload: bytes = b"payload") -> bytes:
    return encode(i, 1000 + i, payload, subject=b"a.b", key=b"k", prio=1, tags=encode_tags(["x"]))


@given(
    offset=st.integers(0, 2**62),
    ts=st.integers(0, 2**62),
    payload=st.binary(max_size=300),
    subject=st.text(max_size=30),
    headers=st.one_of(st.none(), st.binary(min_size=1, max_size=60)),
    key=st.one_of(st.none(), st.binary(max_size=30)),
    prio=st.integers(0, 2),
    tags=st.lists(texts.filter(bool), max_size=4),
    exp=st.integers(0, 2**62),
    dl=st.integers(0, 2**62),
)
def test_encode_decode_round_trip(offset, ts, payload, subject, headers, key, prio, tags, exp, dl):
    data = encode(offset, ts, payload, subject.encode(), headers, key, prio, encode_tags(tags), exp, dl)
    body, size = records.check_at(data, 0)
    assert size == len(data)
    rec = decode_body(body)
    assert rec == Record(
        offset, ts, payload, subject, headers, key, PRIORITIES[prio], tuple(tags), exp or None, dl or None
    )
    framed = b"junk" + data
    assert records.decode_at(framed, memoryview(framed), 4) == rec


def test_empty_key_is_kept_apart_from_no_key():
    body, _ = records.check_at(encode(0, 0, b"p", key=b""), 0)
    assert decode_body(body).key == b""
    body, _ = records.check_at(encode(0, 0, b"p"), 0)
    assert decode_body(body).key is None


def test_scan_cut_anywhere_keeps_only_whole_records():
    recs = [_record(i) for i in range(3)]
    buf = b"".join(recs)
    ends = [sum(len(r) for r in recs[: i + 1]) for i in range(3)]
    for cut in range(len(buf) + 1):
        result = scan(buf[:cut])
        whole = [e for e in ends if e <= cut]
        assert [off for off, _p, _s in result.entries] == list(range(len(whole)))
        assert result.valid_end == (whole[-1] if whole else 0)
        assert result.corrupt == []


def test_scan_skips_a_flipped_bit_in_the_middle_and_keeps_the_rest():
    recs = [_record(i) for i in range(3)]
    buf = bytearray(b"".join(recs))
    buf[len(recs[0]) + len(recs[1]) - 3] ^= 0x04  # inside the payload of record 1
    result = scan(bytes(buf))
    assert [off for off, _p, _s in result.entries] == [0, 2]
    assert result.corrupt == [(len(recs[0]), len(recs[1]))]
    assert result.valid_end == len(buf)


def test_scan_treats_a_bad_last_record_as_a_torn_tail():
    recs = [_record(i) for i in range(2)]
    buf = bytearray(b"".join(recs))
    buf[-1] ^= 0xFF
    result = scan(bytes(buf))
    assert [off for off, _p, _s in result.entries] == [0]
    assert result.valid_end == len(recs[0])


@given(st.binary(max_size=400))
def test_scan_of_arbitrary_bytes_never_raises(data):
    for pos in range(0, len(data), 7):
        try:
            records.decode_at(data, memoryview(data), pos)
        except records.Corrupt:
            pass
    result = scan(data)
    assert 0 <= result.valid_end <= len(data)
    for _off, pos, size in result.entries:
        body, got = records.check_at(data, pos)
        assert got == size
        decode_body(body)
