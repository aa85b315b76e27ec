"""The NATS wire protocol as raw sockets see it: INFO, CONNECT defaults, operations, errors, limits.

Each test runs against robustmq and against nats-server 2.x, so the two must answer byte for byte.
"""

from __future__ import annotations

import pytest
from brokerproc import start_broker
from helpers.nats_raw import RawClient, reference_nats_server

from robustmq.nats import errors


@pytest.fixture(scope="module", params=["robustmq", "nats-server"])
def port(request, tmp_path_factory):
    """Every wire test runs against robustmq and against nats-server: both must answer alike."""
    if request.param == "nats-server":
        with reference_nats_server() as p:
            yield p
        return
    b = start_broker(tmp_path_factory.mktemp("nats-wire"), "--http-port", "off", "--mqtt-port", "off")
    yield b.ports["nats"]
    b.stop()


def err(text: str) -> bytes:
    return f"-ERR '{text}'\r\n".encode()


def test_info_on_connect_has_the_fields_clients_read(port):
    with RawClient(port, connect=None) as c:
        info = c.info
        for key in (
            "server_id",
            "server_name",
            "version",
            "proto",
            "go",
            "host",
            "port",
            "max_payload",
            "client_id",
            "client_ip",
        ):
            assert key in info, key
        assert info["headers"] is True
        assert info["proto"] == 1
        assert info["max_payload"] == 1024 * 1024
        assert info["port"] == port
        assert info["client_ip"] == "127.0.0.1"
        assert "auth_required" not in info
        assert info["version"].count(".") == 2


def test_client_ids_are_unique(port):
    with RawClient(port) as a, RawClient(port) as b:
        assert a.info["client_id"] != b.info["client_id"]


def test_defaults_before_connect_are_verbose_and_pedantic(port):
    with RawClient(port, connect=None) as c:
        c.send(b"SUB foo 1\r\nPUB foo 2\r\nhi\r\nPUB foo.* 1\r\nx\r\n")
        assert c.ping() == (
            b"+OK\r\n+OK\r\nMSG foo 1 2\r\nhi\r\n" + err(errors.INVALID_PUBLISH_SUBJECT) + b"+OK\r\n"
        )


def test_empty_connect_uses_nats_server_defaults(port):
    with RawClient(port, connect={}, handshake=False) as c:
        assert c.read_line() == "+OK"
        c.send(b"SUB a 1\r\n")
        assert c.ping() == b"+OK\r\n"


def test_verbose_off_gives_only_pong(port):
    with RawClient(port) as c:
        c.send(b"SUB a 1\r\nUNSUB 1\r\nPUB a 1\r\nx\r\n")
        assert c.ping() == b""


def test_ops_are_case_insensitive_with_tabs_and_split_frames(port):
    with RawClient(port) as c:
        c.send(b"sub\tmixed.case \t 9\r\n")
        frame = b"pUb mixed.case\treply.to 5\r\nhello\r\n"
        for i in range(len(frame)):
            c.send(frame[i : i + 1])
        f = c.read_frame()
        assert (f.op, f.subject, f.sid, f.reply, f.payload) == (
            "MSG",
            "mixed.case",
            "9",
            "reply.to",
            b"hello",
        )


def test_many_frames_in_one_write_keep_order(port):
    with RawClient(port) as c:
        c.send(b"SUB order 1\r\n")
        c.send(b"".join(b"PUB order %d\r\n%s\r\n" % (len(str(i)), str(i).encode()) for i in range(500)))
        payloads = [f.payload for f in c.read_frames(500)]
        assert payloads == [str(i).encode() for i in range(500)]


def test_wildcards_and_literal_wildcard_characters(port):
    with RawClient(port) as c:
        c.send(b"SUB foo.* 1\r\nSUB foo.> 2\r\nSUB foo.b* 3\r\nSUB > 4\r\n")
        c.send(b"PUB foo 1\r\na\r\n")  # only >
        c.send(b"PUB foo.bar 1\r\nb\r\n")  # 1, 2, 4 (not the literal foo.b*)
        c.send(b"PUB foo.b* 1\r\nc\r\n")  # 1, 2, 3, 4
        c.send(b"PUB foo.a.b 1\r\nd\r\n")  # 2, 4
        frames = c.read_frames(1 + 3 + 4 + 2)
        got = sorted((f.payload.decode(), f.sid) for f in frames)
        assert got == sorted(
            [
                ("a", "4"),
                ("b", "1"),
                ("b", "2"),
                ("b", "4"),
                ("c", "1"),
                ("c", "2"),
                ("c", "3"),
                ("c", "4"),
                ("d", "2"),
                ("d", "4"),
            ]
        )
        assert c.ping() == b""


def test_reply_subjects_are_not_validated(port):
    with RawClient(port) as c:
        c.send(b"SUB foo 1\r\nPUB foo bar.* 1\r\nx\r\n")
        assert c.ping() == b"MSG foo 1 bar.* 1\r\nx\r\n"


def test_invalid_subscription_subject_keeps_the_connection_open(port):
    with RawClient(port) as c:
        for bad in (b"foo..bar", b"foo.", b".foo", b"foo.>.bar", b">.foo"):
            c.send(b"SUB " + bad + b" 1\r\n")
            assert c.ping() == err(errors.INVALID_SUBJECT)
        c.send(b"SUB ok 1\r\nPUB ok 1\r\nx\r\n")
        assert c.ping() == b"MSG ok 1 1\r\nx\r\n"


def test_pedantic_publish_to_a_wildcard_is_an_error_but_still_routed(port):
    with RawClient(port, connect={"verbose": False, "pedantic": True}) as c:
        c.send(b"SUB foo.* 1\r\nPUB foo.* 1\r\nx\r\n")
        assert c.ping() == err(errors.INVALID_PUBLISH_SUBJECT) + b"MSG foo.* 1 1\r\nx\r\n"


def test_duplicate_sid_is_ignored_and_unknown_unsub_too(port):
    with RawClient(port) as c:
        c.send(b"SUB a 1\r\nSUB b 1\r\nUNSUB 99\r\nPUB a 1\r\nx\r\nPUB b 1\r\ny\r\n")
        assert c.ping() == b"MSG a 1 1\r\nx\r\n"


def test_unsub_with_max_counts_deliveries_already_made(port):
    with RawClient(port) as c:
        c.send(b"SUB a 1\r\n" + b"PUB a 1\r\nx\r\n" * 2 + b"UNSUB 1 3\r\n" + b"PUB a 1\r\nx\r\n" * 3)
        assert c.ping() == b"MSG a 1 1\r\nx\r\n" * 3
        c.send(b"SUB b 2\r\nPUB b 1\r\nx\r\nUNSUB 2 1\r\nPUB b 1\r\nx\r\n")
        assert c.ping() == b"MSG b 2 1\r\nx\r\n"


def test_headers_are_forwarded_byte_for_byte_and_stripped_for_plain_subscribers(port):
    block = b"NATS/1.0\r\nX: a\r\nX: b\r\nweird-Case:  spaced \r\n\r\n"
    with (
        RawClient(port, connect={"verbose": False, "pedantic": False, "headers": True}) as h,
        RawClient(port) as plain,
    ):
        h.send(b"SUB hdr 1\r\n")
        plain.send(b"SUB hdr 2\r\n")
        assert h.ping() == b"" and plain.ping() == b""
        h.send(b"HPUB hdr r %d %d\r\n%spayload\r\n" % (len(block), len(block) + 7, block))
        f = h.read_frame()
        assert (f.op, f.reply, f.headers, f.payload) == ("HMSG", "r", block, b"payload")
        g = plain.read_frame()
        assert (g.op, g.reply, g.headers, g.payload) == ("MSG", "r", None, b"payload")


def test_hpub_without_headers_negotiated_closes_silently(port):
    with RawClient(port) as c:
        c.send(b"HPUB a 12 12\r\nNATS/1.0\r\n\r\n\r\n")
        assert c.closed_after() == b""


def test_no_responders_status_for_requesters_with_headers(port):
    with RawClient(port, connect={"verbose": False, "headers": True, "no_responders": True}) as c:
        c.send(b"SUB _INBOX.x 1\r\nPUB nobody _INBOX.x 1\r\nq\r\n")
        assert c.ping() == b"HMSG _INBOX.x 1 38 38\r\nNATS/1.0 503\r\nNats-Subject: nobody\r\n\r\n\r\n"
    with RawClient(port, connect={"verbose": False, "headers": True}) as c:
        c.send(b"SUB _INBOX.y 1\r\nPUB nobody _INBOX.y 1\r\nq\r\n")
        assert c.ping() == b""


def test_no_responders_without_headers_is_refused(port):
    with RawClient(port, connect={"no_responders": True}, handshake=False) as c:
        assert c.closed_after() == err(errors.NO_RESPONDERS_NEEDS_HEADERS)


def test_echo_false_is_honoured(port):
    with RawClient(port, connect={"verbose": False, "echo": False}) as c, RawClient(port) as other:
        c.send(b"SUB e 1\r\n")
        other.send(b"SUB e 1\r\n")
        assert c.ping() == b"" and other.ping() == b""
        c.send(b"PUB e 1\r\nx\r\n")
        assert c.ping() == b""
        assert other.read_frame().payload == b"x"


def test_queue_group_names_are_not_validated(port):
    with RawClient(port) as c:
        c.send(b"SUB q g.* 1\r\nPUB q 1\r\nx\r\n")
        assert c.ping() == b"MSG q 1 1\r\nx\r\n"


# -- bad input: the offender gets its -ERR (or a silent close), a bystander keeps receiving ------

BAD_INPUT = [
    (b"FOO\r\n", err(errors.UNKNOWN_OPERATION)),
    (b"\r\n", err(errors.UNKNOWN_OPERATION)),
    (b"PUB foo 3\r\nabcdef\r\n", err(errors.UNKNOWN_OPERATION)),
    (b"PUB foo 1048577\r\n", err(errors.MAX_PAYLOAD)),
    (b"SUB " + b"x" * 5000 + b" 1\r\n", err(errors.MAX_CONTROL_LINE)),
    (b"PUB foo abc\r\n", b""),
    (b"SUB a b c 1\r\n", b""),
    (b"CONNECT {not json\r\n", b""),
    (b'CONNECT {"verbose": "yes"}\r\n', b""),
]


@pytest.mark.parametrize("data, expected", BAD_INPUT)
def test_bad_input_closes_only_the_offender(port, data, expected):
    with (
        RawClient(port) as bystander,
        RawClient(port, connect=None) as publisher,
        RawClient(port, connect=None) as bad,
    ):
        bystander.send(b"SUB keep.going 1\r\n")
        assert bystander.ping() == b""
        bad.send(data)
        assert bad.closed_after() == expected
        publisher.send(b'CONNECT {"verbose":false}\r\nPUB keep.going 2\r\nok\r\n')
        assert bystander.read_frame().payload == b"ok"


def test_exactly_max_payload_is_accepted(port):
    body = b"z" * (1024 * 1024)
    with RawClient(port) as c:
        c.send(b"SUB big 1\r\nPUB big %d\r\n%s\r\n" % (len(body), body))
        assert c.read_frame().payload == body
