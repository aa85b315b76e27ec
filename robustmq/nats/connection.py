"""One NATS client connection: a thin asyncio Protocol around the sans-IO parser.

It applies CONNECT options, auth and permissions, routes publishes, and queues output for one write a tick.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from robustmq.nats import encoder, errors
from robustmq.nats.errors import ProtocolViolation
from robustmq.nats.events import Connect, Ping, Pong, Pub, PubBatch, PubRun, Sub, Unsub
from robustmq.nats.limits import STALL_HIGH_WATER_MAX_BYTES, SUB_SLICE_FRAMES, WORK_BUDGET_S
from robustmq.nats.parser import ClientParser
from robustmq.router import Subscription
from robustmq.subjects import is_valid_publish_subject, is_valid_subject

if TYPE_CHECKING:
    from robustmq.admission import HandshakeTicket
    from robustmq.auth import Permissions, SubjectRule
    from robustmq.nats.server import NatsServer

OK = encoder.OK
PONG = encoder.PONG
CRLF = b"\r\n"

_PREFIX_CACHE_MAX_ENTRIES = 64  # per subscription: wildcard subscriptions see many subjects
# "<size>\r\n" for the payload sizes seen so far (most traffic uses a handful of sizes)
_SIZE_LINES: dict[int, bytes] = {}
_SIZE_LINES_MAX = 4096


def _size_line(size: int) -> bytes:
    line = _SIZE_LINES.get(size)
    if line is None:
        line = b"%d\r\n" % size
        if len(_SIZE_LINES) < _SIZE_LINES_MAX:
            _SIZE_LINES[size] = line
    return line


# the last plain payload delivered and its "<size>\r\n<payload>\r\n": a fan-out encodes it once
_tail_payload: bytes | None = None
_tail = b""


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


_BOOL_OPTIONS = ("verbose", "pedantic", "echo", "headers", "no_responders", "tls_required")
_STR_OPTIONS = ("name", "lang", "version", "user", "pass", "auth_token", "sig", "jwt", "nkey", "account")

# why reading is paused (bits of NatsConnection.paused_by); it resumes when none is left
_STALLED = 1  # a reader this connection feeds is behind (back-pressure)
_YIELDED = 2  # the read budget is spent: other connections go first for one loop iteration
_SLICED = 4  # a SUB flood is being handled slice by slice


class _Gone:
    """Stands in for the connection of a removed subscription: every delivery is dropped."""

    closed = True
    blocked = True


_GONE = _Gone()


class NatsSubscription(Subscription):
    """A subscription held by a network client: delivering queues a MSG/HMSG frame on it."""

    __slots__ = (
        "sid",
        "conn",
        "max_msgs",
        "delivered",
        "rule",
        "_prefixes",
        "_sid_b",
    )

    def __init__(self, conn: NatsConnection, subject: str, queue: str | None, sid: str) -> None:
        super().__init__(subject, None, queue, conn)
        self.conn = conn
        self.sid = sid
        self.max_msgs = 0
        self.delivered = 0
        self.rule: SubjectRule | None = None  # deny list checked per delivery, when needed
        self._sid_b = b" " + _b(sid) + b" "
        # subject -> b"MSG <subject> <sid> ": one entry for a literal subscription, a few for wildcards
        self._prefixes: dict[str, bytes] = {}

    def deliver(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        conn = self.conn
        if conn.blocked:  # closed, or its write buffer is past the high-water mark
            if conn.closed:
                return None
            origin = conn.router.current_origin
            if type(origin) is NatsConnection:
                origin.stall_requested = True  # the publisher waits a little (see stall)
        if self.rule is not None and not self.rule.permits_literal(subject):
            return None
        prefix = self._prefixes.get(subject) or self._prefix(subject)
        size = len(payload)
        if headers is None or not conn.headers:
            if reply is None:
                head = prefix + (_SIZE_LINES.get(size) or _size_line(size))
            else:
                head = prefix + _b(reply) + b" " + (_SIZE_LINES.get(size) or _size_line(size))
        else:
            hsize = len(headers)
            mid = b" %d %d\r\n" % (hsize, hsize + size)
            head = b"H" + prefix + (_b(reply) + mid if reply is not None else mid[1:]) + headers
        conn.out += (head, payload, CRLF)
        conn.out_msgs += 1
        conn.out_bytes += size
        if not conn.dirty:
            conn.server.schedule_flush(conn)
        self.delivered += 1
        if self.max_msgs and self.delivered >= self.max_msgs:
            conn.remove_subscription(self)
        return None

    def deliver_plain(self, subject: str, payload: bytes) -> None:
        conn = self.conn
        if conn.blocked or self.rule is not None or self.max_msgs:
            self.deliver(subject, None, None, payload)
            return
        global _tail_payload, _tail
        if payload is not _tail_payload:
            # "<size>\r\n<payload>\r\n", encoded once for every subscriber of this message
            size = len(payload)
            _tail = (_SIZE_LINES.get(size) or _size_line(size)) + payload + CRLF
            _tail_payload = payload
        conn.out += (self._prefixes.get(subject) or self._prefix(subject), _tail)
        conn.out_msgs += 1
        conn.out_bytes += len(payload)
        self.delivered += 1
        if not conn.dirty:
            conn.server.schedule_flush(conn)

    def _prefix(self, subject: str) -> bytes:
        prefixes = self._prefixes
        if len(prefixes) >= _PREFIX_CACHE_MAX_ENTRIES:
            prefixes.clear()
        prefix = prefixes[subject] = b"MSG " + _b(subject) + self._sid_b
        return prefix

    def deliver_many(self, subject: str, payloads: list[bytes]) -> None:
        conn = self.conn
        if conn.blocked or self.rule is not None or self.max_msgs:
            deliver = self.deliver
            for payload in payloads:
                deliver(subject, None, None, payload)
            return
        prefix = self._prefixes.get(subject) or self._prefix(subject)
        out = conn.out
        count = len(payloads)
        sizes = set(map(len, payloads))
        if len(sizes) == 1:
            # one size: every frame has the same head, so the run is encoded by one join
            size = sizes.pop()
            head = prefix + (_SIZE_LINES.get(size) or _size_line(size))
            out.append(head)
            out.append((CRLF + head).join(payloads))
            out.append(CRLF)
            total = size * count
        else:
            append = out.append
            total = 0
            for payload in payloads:
                size = len(payload)
                append(prefix + (_SIZE_LINES.get(size) or _size_line(size)))
                append(payload)
                append(CRLF)
                total += size
        conn.out_msgs += count
        conn.out_bytes += total
        self.delivered += count
        if not conn.dirty:
            conn.server.schedule_flush(conn)


class NatsConnection(asyncio.Protocol):
    """One client. Also the ``origin`` of its publishes (client_id, protocol, user, name, remote)."""

    protocol = "nats"

    def __init__(self, server: NatsServer) -> None:
        self.server = server
        self.router = server.router
        self.client_id = server.next_client_id()
        settings = server.settings
        self.parser = ClientParser(
            settings.max_payload_bytes, settings.max_control_line_bytes, merge_runs=True
        )
        self.max_pending_bytes = settings.max_pending_bytes
        self.max_subscriptions = settings.max_subscriptions
        self.transport: asyncio.Transport | None = None
        self.subs: dict[str, NatsSubscription] = {}
        self.out: list[bytes] = []
        self.dirty = False
        self.closed = False
        self.blocked = False  # closed, or backlogged: the delivery hot path checks this one flag
        self.backlogged = False
        self.stall_requested = False
        self.paused_by = 0  # _STALLED | _YIELDED | _SLICED
        self.busy_s = 0.0  # loop time spent on this connection's input since it last yielded
        self.sub_frames = 0  # SUB/UNSUB handled in the current slice
        self.backlog: list[Any] | None = None  # events left for the next slice of a SUB flood
        self.pending_failure: tuple[str | None, str] | None = None  # a violation after the backlog
        self.handshake: HandshakeTicket | None = None  # held until CONNECT is accepted
        # CONNECT options, with nats-server's defaults until CONNECT arrives
        self.connect_received = False
        self.verbose = True
        self.pedantic = True
        self.echo = True
        self.headers = False
        self.no_responders = False
        self.name: str | None = None
        self.lang: str | None = None
        self.version: str | None = None
        self.user: str | None = None
        self.permissions: Permissions | None = None
        self.skip_owner: NatsConnection | None = None  # self when echo is off
        # True while publishes need the slow checks: pedantic, permissions, no CONNECT yet
        self.checked = True
        self.ip = ""
        self.port = 0
        self.start_time = time.time()
        self.in_msgs = 0
        self.in_bytes = 0
        self.out_msgs = 0
        self.out_bytes = 0
        self.pings_outstanding = 0
        self.ping_sent_at = 0.0
        self.next_ping_at = 0.0
        self.rtt_s: float | None = None
        self.close_reason = ""
        self._close_callbacks: list[Callable[[], Any]] | None = None

    # -- the client object contract (router.current_origin) ------------------------------------

    @property
    def remote(self) -> str:
        return f"{self.ip}:{self.port}"

    def add_close_callback(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` once when this connection closes, for any reason (at once if it has)."""
        if self.closed:
            fn()
            return
        if self._close_callbacks is None:
            self._close_callbacks = []
        self._close_callbacks.append(fn)

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.ip, self.port = peer[0], peer[1]
        server = self.server
        self.handshake = server.handshakes.admit(self.ip)
        if self.handshake is None:  # too many sockets without CONNECT: refuse before any work
            self.closed = self.blocked = True
            transport.abort()
            return
        high = min(STALL_HIGH_WATER_MAX_BYTES, max(self.max_pending_bytes // 4, 1))
        transport.set_write_buffer_limits(high=high, low=high // 4)  # type: ignore[attr-defined]
        self.next_ping_at = time.monotonic() + server.settings.ping_interval_s
        self.send(server.info_frame(self))
        if not server.register(self):
            self.fail(errors.MAX_CONNECTIONS)

    def data_received(self, data: bytes) -> None:
        started = perf_counter()
        try:
            events = self.parser.feed(data)
        except ProtocolViolation as exc:
            if self.backlog is not None:
                self.backlog.extend(exc.events)
            else:
                self.handle(exc.events)
            if self.backlog is not None:  # fail once the events before the violation are handled
                self.pending_failure = (exc.text, exc.reason)
            elif not self.closed:
                self.fail(exc.text, exc.reason)
            return
        if self.backlog is not None:  # still slicing an earlier SUB flood: keep the order
            self.backlog.extend(events)
        else:
            self.handle(events)
        if self.stall_requested:
            self.stall()
        self.busy_s += perf_counter() - started
        if self.busy_s >= WORK_BUDGET_S:
            self.busy_s = 0.0
            if not self.closed:
                self._pause(_YIELDED)
                self.server.call_soon(self._resume, _YIELDED)

    def connection_lost(self, exc: Exception | None) -> None:
        self._teardown(self.close_reason or ("client closed" if exc is None else str(exc)))

    def pause_writing(self) -> None:
        # Past the high-water mark: publishers that feed this connection get stalled briefly so
        # a reader that is merely behind can catch up; one that stays behind is cut off at
        # max_pending_bytes (see flush), as nats-server does.
        self.backlogged = True
        self.blocked = True

    def resume_writing(self) -> None:
        self.backlogged = False
        self.blocked = self.closed
        self.server.release_stalled()

    def stall(self) -> None:
        """Stop reading from this publisher until a backlogged reader drains, or a short while."""
        self.stall_requested = False
        if self.closed or self.paused_by & _STALLED or self.transport is None:
            return
        self._pause(_STALLED)
        self.server.add_stalled(self)

    def unstall(self) -> None:
        self._resume(_STALLED)

    def _pause(self, reason: int) -> None:
        if not self.paused_by and self.transport is not None:
            self.transport.pause_reading()
        self.paused_by |= reason

    def _resume(self, reason: int) -> None:
        if not self.paused_by & reason:
            return
        self.paused_by &= ~reason
        if not self.paused_by and not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def _next_slice(self) -> None:
        """Handle the next slice of a SUB flood, one loop tick after the last."""
        self.sub_frames = 0
        backlog, self.backlog = self.backlog, None
        if self.closed or backlog is None:
            return
        self.handle(backlog)
        if self.backlog is not None or self.closed:
            return
        failure, self.pending_failure = self.pending_failure, None
        if failure is not None:
            self.fail(*failure)
            return
        if self.stall_requested:
            self.stall()
        self._resume(_SLICED)

    # -- events --------------------------------------------------------------------------------

    def handle(self, events: list[Any]) -> None:
        router = self.router
        publish = router.publish
        pending = iter(events)  # an iterator, so a SUB flood can leave the rest for the next slice
        for ev in pending:
            if self.closed:
                return
            kind = type(ev)
            if kind is Pub:
                subject, reply, headers, payload = ev
                if (self.checked or headers is not None) and not self._may_publish(subject, headers):
                    if self.closed:
                        return
                    continue
                self.in_msgs += 1
                self.in_bytes += len(payload)
                if self.verbose:
                    self.send(OK)  # nats-server acknowledges on the PUB line, before routing
                try:
                    count = publish(subject, payload, reply, headers, self.skip_owner, self)
                except Exception:  # an in-process subscriber failed; the client carries on
                    self.server.delivery_failed(subject)
                    continue
                if count == 0 and reply and self.no_responders:
                    self._send_no_responders(subject, reply)
            elif kind is PubBatch:
                if self.checked or self.verbose:
                    self.handle(ev.expand())  # one by one, with every check and +OK
                    continue
                self.in_msgs += len(ev) >> 1
                self.in_bytes += sum(map(len, ev[1::2]))
                router.publish_batch(ev, self.skip_owner, self, self.server.delivery_failed)
            elif kind is PubRun:
                subject, payloads = ev
                if self.checked or self.verbose:
                    self.handle(ev.expand())  # one by one, with every check and +OK
                    continue
                self.in_msgs += len(payloads)
                self.in_bytes += sum(map(len, payloads))
                try:
                    router.publish_many(subject, payloads, self.skip_owner, self)
                except Exception:
                    self.server.delivery_failed(subject)
            elif kind is Ping:
                if not self.connect_received and self.server.auth_required:
                    self.fail(errors.AUTHORIZATION_VIOLATION)
                    return
                self.send(PONG)
            elif kind is Sub or kind is Unsub:
                if kind is Sub:
                    self._on_sub(ev)
                else:
                    self._on_unsub(ev)
                self.sub_frames += 1
                if self.sub_frames >= SUB_SLICE_FRAMES and not self.closed:
                    # each SUB is a trie insert: yield to the loop, carry on next tick
                    self.backlog = list(pending)
                    self._pause(_SLICED)
                    self.server.call_soon(self._next_slice)
                    return
            elif kind is Pong:
                self.pings_outstanding = 0
                if self.ping_sent_at:
                    self.rtt_s = time.monotonic() - self.ping_sent_at
                    self.ping_sent_at = 0.0
            elif kind is Connect:
                self._on_connect(ev.options)

    def _may_publish(self, subject: str, headers: bytes | None) -> bool:
        """The checks most publishes skip (see ``checked``); False drops the message."""
        if not self.connect_received and self.server.auth_required:
            self.fail(errors.AUTHORIZATION_VIOLATION)
            return False
        if self.permissions is not None and not self.permissions.may_publish(subject):
            self.send(encoder.err(errors.publish_violation(subject)))
            return False
        if self.pedantic and not is_valid_publish_subject(subject):
            self.send(encoder.err(errors.INVALID_PUBLISH_SUBJECT))  # nats-server still routes it
        if headers is not None and not self.headers:
            self.fail(None, "message headers not supported")
            return False
        return True

    def _update_checked(self) -> None:
        self.checked = (
            self.pedantic
            or self.permissions is not None
            or (self.server.auth_required and not self.connect_received)
        )

    def _on_connect(self, options: dict[str, Any]) -> None:
        for key in _BOOL_OPTIONS:
            if key in options and not isinstance(options[key], bool):
                self.fail(None, f"bad CONNECT field {key}")
                return
        for key in _STR_OPTIONS:
            value = options.get(key)
            if value is not None and not isinstance(value, str):
                self.fail(None, f"bad CONNECT field {key}")
                return
        proto = options.get("protocol", 0)
        if not isinstance(proto, int) or isinstance(proto, bool) or not 0 <= proto <= 1:
            self.fail(errors.INVALID_CLIENT_PROTOCOL)
            return
        server = self.server
        if server.auth_required:
            principal = server.authenticator.authenticate(
                options.get("user"), options.get("pass"), options.get("auth_token")
            )
            if principal is None:
                self.fail(errors.AUTHORIZATION_VIOLATION)
                return
            self.user = principal.user
            self.permissions = principal.permissions
        self.verbose = options.get("verbose", True)
        self.pedantic = options.get("pedantic", True)
        self.echo = options.get("echo", True)
        self.headers = options.get("headers", False)
        self.no_responders = options.get("no_responders", False)
        if self.no_responders and not self.headers:
            self.fail(errors.NO_RESPONDERS_NEEDS_HEADERS)
            return
        self.name = options.get("name")
        self.lang = options.get("lang")
        self.version = options.get("version")
        self.connect_received = True
        if self.handshake is not None:
            self.handshake.release()
            self.handshake = None
        self.skip_owner = None if self.echo else self
        self._update_checked()
        if self.verbose:
            self.send(OK)

    def _on_sub(self, ev: Sub) -> None:
        if not self.connect_received and self.server.auth_required:
            self.fail(errors.AUTHORIZATION_VIOLATION)
            return
        subject = ev.subject
        if not is_valid_subject(subject):
            self.send(encoder.err(errors.INVALID_SUBJECT))
            return
        if ev.sid in self.subs:
            if self.verbose:
                self.send(OK)
            return
        if self.max_subscriptions and len(self.subs) >= self.max_subscriptions:
            self.send(encoder.err(errors.MAX_SUBSCRIPTIONS))
            return
        sub = NatsSubscription(self, subject, ev.queue, ev.sid)
        perms = self.permissions
        if perms is not None:
            if not perms.may_subscribe(subject):
                self.send(encoder.err(errors.subscribe_violation(subject)))
                return
            sub.rule = perms.delivery_filter(subject)
        if self.server.auth_required and not self.server.may_subscribe_agent_subject(self.user, subject):
            self.send(encoder.err(errors.subscribe_violation(subject)))
            return
        self.subs[ev.sid] = sub
        self.router.add(sub)
        if self.verbose:
            self.send(OK)

    def _on_unsub(self, ev: Unsub) -> None:
        if not self.connect_received and self.server.auth_required:
            self.fail(errors.AUTHORIZATION_VIOLATION)
            return
        sub = self.subs.get(ev.sid)
        if sub is not None:
            if ev.max_msgs and ev.max_msgs > sub.delivered:
                sub.max_msgs = ev.max_msgs
            else:
                self.remove_subscription(sub)
        if self.verbose:
            self.send(OK)

    def _send_no_responders(self, subject: str, reply: str) -> None:
        """A 503 status to the requester's own subscription on ``reply``, as nats-server does."""
        result = self.router.trie.match(reply)
        for sub in (*result.plain, *(m for group in result.queues for m in group)):
            if sub.owner is self:
                sub.deliver(reply, None, encoder.no_responders_headers(subject), b"")
                return

    # -- subscriptions and output ----------------------------------------------------------------

    def remove_subscription(self, sub: NatsSubscription) -> None:
        if self.subs.get(sub.sid) is sub:
            del self.subs[sub.sid]
        self.router.unsubscribe(sub)
        # a publish already iterating over a snapshot of matches must not deliver to it any more
        sub.conn = _GONE  # type: ignore[assignment]

    def send(self, frame: bytes) -> None:
        """Queue a control frame; it goes out with everything else at the end of this loop tick."""
        if self.closed:
            return
        self.out.append(frame)
        if not self.dirty:
            self.server.schedule_flush(self)

    def flush(self) -> None:
        """Write everything queued in one ``transport.write``; cut off a slow consumer."""
        self.dirty = False
        out = self.out
        if not out or self.closed:
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self.transport
        assert transport is not None
        transport.write(data)
        if transport.get_write_buffer_size() > self.max_pending_bytes:
            self.close_reason = "slow consumer"
            self.server.slow_consumers += 1
            self._teardown("slow consumer")
            transport.abort()

    def ping(self, now: float) -> None:
        """Called by the server's sweep: PING, or close a client that left too many unanswered."""
        if self.pings_outstanding >= self.server.settings.max_pings_outstanding:
            self.fail(errors.STALE_CONNECTION)
            return
        self.pings_outstanding += 1
        self.ping_sent_at = now
        self.send(encoder.PING)

    def fail(self, text: str | None, reason: str = "") -> None:
        """Send ``-ERR text`` (when there is one), flush, and close."""
        if self.closed:
            return
        if text is not None:
            self.send(encoder.err(text))
        self.close(reason or text or "protocol violation")

    def close(self, reason: str = "server closed") -> None:
        if self.closed:
            return
        if self.dirty or self.out:
            self.flush()
        self.close_reason = reason
        self._teardown(reason)
        if self.transport is not None:
            self.transport.close()

    def _teardown(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.blocked = True
        self.close_reason = self.close_reason or reason
        self.backlog = None
        if self.handshake is not None:
            self.handshake.release()
            self.handshake = None
        for sub in self.subs.values():
            self.router.unsubscribe(sub)
        self.subs.clear()
        self.out.clear()
        self.server.unregister(self)
        callbacks, self._close_callbacks = self._close_callbacks, None
        for fn in callbacks or ():
            try:
                fn()
            except Exception:  # a failing callback must not stop the others
                self.server.log.exception("close callback failed")

    # -- introspection -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Per-connection figures, like nats-server's connz entry."""
        transport = self.transport
        buffered = transport.get_write_buffer_size() if transport is not None and not self.closed else 0
        return {
            "cid": self.client_id,
            "ip": self.ip,
            "port": self.port,
            "name": self.name or "",
            "lang": self.lang or "",
            "version": self.version or "",
            "user": self.user,
            "subscriptions": len(self.subs),
            "in_msgs": self.in_msgs,
            "in_bytes": self.in_bytes,
            "out_msgs": self.out_msgs,
            "out_bytes": self.out_bytes,
            "pending_bytes": sum(map(len, self.out)) + buffered,
            "start": self.start_time,
            "rtt_s": self.rtt_s,
        }
