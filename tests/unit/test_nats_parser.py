"""The sans-IO NATS parser and encoder, without sockets: operations, limits, splits, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robustmq.nats import encoder, errors
from robustmq.nats.errors import ProtocolViolation
from robustmq.nats.events import PING, PONG, Connect, Pub, PubBatch, PubRun, Sub, Unsub
from robustmq.nats.parser import ClientParser


def parse(data: bytes, **limits: int) -> list:
    return ClientParser(**limits).feed(data)


def violation(data: bytes, **limits: int) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as info:
        ClientParser(**limits).feed(data)
    return info.value


def test_every_client_operation_is_decoded():
    data = (
        b'CONNECT {"verbose":false,"name":"x"}\r\n'
        b"PUB a.b 5\r\nhello\r\n"
        b"PUB a.b reply.to 2\r\nhi\r\n"
        b"HPUB a.b 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
        b"HPUB a.b r 12 12\r\nNATS/1.0\r\n\r\n\r\n"
        b"SUB a.* 1\r\nSUB a.> workers 2\r\n"
        b"UNSUB 1\r\nUNSUB 2 10\r\n"
        b"PING\r\nPONG\r\n"
    )
    assert parse(data) == [
        Connect({"verbose": False, "name": "x"}),
        Pub("a.b", None, None, b"hello"),
        Pub("a.b", "reply.to", None, b"hi"),
        Pub("a.b", None, b"NATS/1.0\r\n\r\n", b"hi"),
        Pub("a.b", "r", b"NATS/1.0\r\n\r\n", b""),
        Sub("a.*", None, "1"),
        Sub("a.>", "workers", "2"),
        Unsub("1", 0),
        Unsub("2", 10),
        PING,
        PONG,
    ]


def test_operations_are_case_insensitive_and_split_by_spaces_or_tabs():
    data = b"sub\tfoo \t 1\r\npUb foo\t3\r\nabc\r\nping\r\nPING\n"
    assert parse(data) == [Sub("foo", None, "1"), Pub("foo", None, None, b"abc"), PING, PING]


def test_payload_may_hold_newlines_and_operation_names():
    assert parse(b"PUB x 11\r\nPING\r\nPUB\r\n\r\n") == [Pub("x", None, None, b"PING\r\nPUB\r\n")]


def test_an_unfinished_frame_waits_for_more_bytes():
    parser = ClientParser()
    assert parser.feed(b"PUB foo 5\r\nhel") == []
    assert parser.feed(b"lo") == []
    assert parser.feed(b"\r") == []
    assert parser.feed(b"\nPI") == [Pub("foo", None, None, b"hello")]
    assert parser.feed(b"NG\r\n") == [PING]


def test_a_large_payload_arriving_in_many_reads():
    parser = ClientParser()
    body = bytes(range(256)) * 4096  # 1 MiB
    frame = encoder.pub("big", body)
    events = []
    for i in range(0, len(frame), 65536):
        events += parser.feed(frame[i : i + 65536])
    assert events == [Pub("big", None, None, body)]


def test_encoder_frames_round_trip_through_the_parser():
    frames = (
        encoder.connect({"verbose": False})
        + encoder.pub("a", b"x", reply="r")
        + encoder.hpub("a", b"NATS/1.0\r\nK: v\r\n\r\n", b"yz")
        + encoder.sub("a.*", "7", queue="q")
        + encoder.unsub("7", 3)
    )
    assert parse(frames) == [
        Connect({"verbose": False}),
        Pub("a", "r", None, b"x"),
        Pub("a", None, b"NATS/1.0\r\nK: v\r\n\r\n", b"yz"),
        Sub("a.*", "q", "7"),
        Unsub("7", 3),
    ]


def test_server_frames_have_nats_server_layout():
    assert encoder.info({"a": 1}) == b'INFO {"a":1} \r\n'
    assert encoder.err("Invalid Subject") == b"-ERR 'Invalid Subject'\r\n"
    assert encoder.msg("foo", "1", None, b"hi") == b"MSG foo 1 2\r\nhi\r\n"
    assert encoder.msg("foo", "1", "r", b"hi") == b"MSG foo 1 r 2\r\nhi\r\n"
    block = encoder.no_responders_headers("nobody")
    assert encoder.hmsg("_INBOX.x", "1", None, block, b"") == (
        b"HMSG _INBOX.x 1 38 38\r\nNATS/1.0 503\r\nNats-Subject: nobody\r\n\r\n\r\n"
    )


def test_payload_of_exactly_max_payload_is_accepted_and_one_more_is_refused_on_the_line():
    assert parse(b"PUB a 8\r\n12345678\r\n", max_payload_bytes=8) == [Pub("a", None, None, b"12345678")]
    # refused before the body arrives
    assert violation(b"PUB a 9\r\n", max_payload_bytes=8).text == errors.MAX_PAYLOAD
    assert violation(b"HPUB a 2 9\r\n", max_payload_bytes=8).text == errors.MAX_PAYLOAD


def test_control_line_limit():
    assert violation(b"SUB " + b"a" * 5000, max_control_line_bytes=4096).text == errors.MAX_CONTROL_LINE
    assert violation(b"SUB " + b"a" * 5000 + b" 1\r\n").text == errors.MAX_CONTROL_LINE
    line = b"SUB " + b"a" * (4096 - 6) + b" 1"
    assert len(line) == 4096
    assert parse(line + b"\r\n") == [Sub("a" * 4090, None, "1")]


@pytest.mark.parametrize(
    "data, text",
    [
        (b"\r\n", errors.UNKNOWN_OPERATION),
        (b"FOO bar\r\n", errors.UNKNOWN_OPERATION),
        (b"  PING\r\n", errors.UNKNOWN_OPERATION),
        (b"UNSUB\r\n", errors.UNKNOWN_OPERATION),
        (b"PUB\r\n", errors.UNKNOWN_OPERATION),
        (b"PUB foo 3\r\nabcd\r\n", errors.UNKNOWN_OPERATION),
        (b"-ERR 'x'\r\n", errors.UNKNOWN_OPERATION),
        (b"PUB foo abc\r\n", None),
        (b"PUB foo -1\r\n", None),
        (b"PUB foo\r\n", None),
        (b"PUB a b c 1\r\n", None),
        (b"HPUB foo 3 2\r\n", None),
        (b"SUB a b c 1\r\n", None),
        (b"SUB foo\r\n", None),
        (b"CONNECT {bad json\r\n", None),
        (b"CONNECT\r\n", None),
        (b"CONNECT [1]\r\n", None),
    ],
)
def test_broken_input_gives_nats_server_texts_or_a_silent_close(data, text):
    assert violation(data).text == text


def test_events_before_a_violation_are_kept_and_the_parser_stays_broken():
    parser = ClientParser()
    with pytest.raises(ProtocolViolation) as info:
        parser.feed(b"PING\r\nSUB a 1\r\nBAD\r\nPING\r\n")
    assert info.value.events == [PING, Sub("a", None, "1")]
    with pytest.raises(ProtocolViolation):
        parser.feed(b"PING\r\n")


def test_merged_runs_group_consecutive_plain_publishes_to_one_subject():
    data = b"PUB a 1\r\n1\r\nPUB a 1\r\n2\r\nPUB a r 1\r\n3\r\nPUB a 1\r\n4\r\nPUB a 1\r\n5\r\nPUB b 1\r\n6\r\nPING\r\nPUB b 1\r\n7\r\n"
    events = ClientParser(merge_runs=True).feed(data)
    assert events == [
        PubRun("a", [b"1", b"2"]),
        Pub("a", "r", None, b"3"),
        PubRun("a", [b"4", b"5"]),
        PubBatch(["b", b"6"]),
        PING,
        PubBatch(["b", b"7"]),
    ]
    assert _expand(events) == parse(data)


def test_merged_plain_publishes_to_varied_subjects_form_one_flat_batch():
    data = b"PUB a 1\r\n1\r\nPUB b 2\r\n22\r\nPUB c 0\r\n\r\nPUB c 1\r\n3\r\nPUB d 1\r\n4\r\nPUB e r 1\r\n5\r\nPUB f 1\r\n6\r\n"
    events = ClientParser(merge_runs=True).feed(data)
    assert events == [
        PubBatch(["a", b"1", "b", b"22"]),
        PubRun("c", [b"", b"3"]),
        PubBatch(["d", b"4"]),
        Pub("e", "r", None, b"5"),
        PubBatch(["f", b"6"]),
    ]
    assert _expand(events) == parse(data)


def _expand(events: list) -> list:
    out: list = []
    for ev in events:
        out += ev.expand() if isinstance(ev, (PubRun, PubBatch)) else [ev]
    return out


def test_unsub_with_a_bad_count_removes_at_once():
    assert parse(b"UNSUB 1 x\r\nUNSUB 2 -1\r\n") == [Unsub("1", 0), Unsub("2", 0)]


def test_empty_header_block_is_a_plain_message():
    assert parse(b"HPUB foo 0 2\r\nhi\r\n") == [Pub("foo", None, None, b"hi")]


def test_info_and_ok_from_a_client_are_ignored():
    assert parse(b"INFO {}\r\n+OK\r\nPING\r\n") == [PING]


def test_non_utf8_subjects_round_trip_as_bytes():
    (ev,) = parse(b"PUB a\xff 1\r\nx\r\n")
    assert ev.subject.encode("utf-8", "surrogateescape") == b"a\xff"


# -- fuzzing: the same events whatever the split, and only the parser's own error -------------

_ops = st.sampled_from(
    [
        b"PING\r\n",
        b"PONG\r\n",
        b"ping\n",
        b"SUB foo.* 1\r\n",
        b"SUB foo q 22\r\n",
        b"UNSUB 1 5\r\n",
        b"PUB foo 3\r\nabc\r\n",
        b"PUB foo.bar r 0\r\n\r\n",
        b"HPUB a 12 15\r\nNATS/1.0\r\n\r\nxyz\r\n",
        b'CONNECT {"verbose":false}\r\n',
        b"PUB x 12\r\nPING\r\nPONG\r\n\r\n",
    ]
)
_noise = st.binary(max_size=40)


def _run(chunks: list[bytes], merge_runs: bool = False) -> tuple[list, str | None]:
    parser = ClientParser(max_payload_bytes=64, max_control_line_bytes=48, merge_runs=merge_runs)
    events: list = []
    for chunk in chunks:
        try:
            events += parser.feed(chunk)
        except ProtocolViolation as exc:
            return _expand(events + exc.events), exc.text or "closed"
    return _expand(events), None


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for p in points:
        chunks.append(data[last:p])
        last = p
    chunks.append(data[last:])
    return chunks


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_ops, _noise), max_size=12), st.lists(st.integers(min_value=0), max_size=12))
def test_any_split_of_any_bytes_gives_the_same_events(pieces, cuts):
    data = b"".join(pieces)
    whole = _run([data])
    assert _run(_split(data, cuts)) == whole
    assert _run([data[i : i + 1] for i in range(len(data))]) == whole
    assert _run(_split(data, cuts), merge_runs=True) == whole


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_nothing_but_the_protocol_violation(data):
    _run([data])
    _run([data[i : i + 7] for i in range(0, len(data), 7)])


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=16, max_value=300),
    st.integers(min_value=0, max_value=5),
    st.lists(st.tuples(st.integers(min_value=0), st.binary(min_size=1, max_size=1)), max_size=3),
    st.lists(st.integers(min_value=0), max_size=4),
)
def test_long_runs_of_one_frame_parse_alike_even_when_damaged(count, size, damage, cuts):
    frame = b"PUB run.subject %d\r\n%s\r\n" % (size, b"p" * size)
    data = bytearray(frame * count)
    for where, byte in damage:  # a few bytes anywhere: a bad payload, a broken line, a bad CRLF
        data[where % len(data)] = byte[0]
    data = bytes(data)
    whole = _run([data])
    assert _run([data], merge_runs=True) == whole
    assert _run(_split(data, cuts), merge_runs=True) == whole


_plain = st.sampled_from(
    [
        b"PUB v.a 3\r\nabc\r\n",
        b"PUB v.b 4\r\nabcd\r\n",
        b"PUB v.c 0\r\n\r\n",
        b"PUB v.a 4\r\nwxyz\r\n",
        b"PUB v.i 003\r\nxyz\r\n",
        b"PUB\tv.g\t2\r\nxy\r\n",
    ]
)
_other = st.sampled_from(
    [
        b"PUB v.d 5\r\nab\r\nc\r\n",  # a payload holding CRLF
        b"PUB v.e 7\r\nPING\r\n\r\n",
        b"PUB v.a r 2\r\nxy\r\n",
        b"pub v.f 1\r\nx\r\n",
        b"PUB v.h 2\nxy\r\n",  # a bare LF ends the line
        b"HPUB v.j 12 13\r\nNATS/1.0\r\n\r\nx\r\n",
        b"SUB v.* 9\r\n",
        b"PING\r\n",
        b" PUB v.k 1\r\nx\r\n",  # a blank before the operation
        b"PUB v.l 65\r\n" + b"x" * 65 + b"\r\n",  # over max_payload_bytes
        b"PUB " + b"s" * 50 + b" 1\r\nx\r\n",  # over max_control_line_bytes
        b"PUB v.m 2\r\nxyz\r\n",  # longer than declared
        b"PUB v.n x\r\nx\r\n",
        b"PUB v.o 1 2 3\r\nx\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_plain, min_size=60, max_size=400),
    st.lists(st.tuples(st.integers(min_value=0), _other), max_size=6),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_long_stretches_of_varied_frames_read_in_columns_parse_alike(frames, others, cuts):
    for where, frame in others:
        frames.insert(where % len(frames), frame)
    data = b"".join(frames)
    whole = _run([data])
    assert _run([data], merge_runs=True) == whole
    assert _run(_split(data, cuts), merge_runs=True) == whole
