"""MQTT test clients: a raw-socket client on the project codec, and a paho wrapper with queues.

The raw client checks packets exactly; the paho client checks behaviour with a real library.
"""

from __future__ import annotations

import itertools
import queue
import socket
import time
from typing import Any

import paho.mqtt.client as paho

from helpers.waits import QUIET_S, WAIT_S
from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt.codec import MqttDecoder, encode

_ids = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}-{time.monotonic_ns() % 100000}"


class RawClient:
    """A blocking MQTT client speaking raw packets, for precise protocol tests."""

    def __init__(self, port: int, version: int = P.MQTT_3_1_1) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self.version = version
        self.decoder = MqttDecoder(version=version)
        self.pending: list[Any] = []

    def connect(self, client_id: str, clean: bool = True, keepalive: int = 60, will: P.Will | None = None,
                properties: P.Properties | None = None, username: str | None = None,
                password: bytes | None = None) -> P.Connack:  # fmt: skip
        name = "MQIsdp" if self.version == P.MQTT_3_1 else "MQTT"
        self.send(
            P.Connect(client_id, self.version, clean, keepalive, will, username, password, properties, name)
        )
        connack = self.recv()
        assert isinstance(connack, P.Connack), connack
        return connack

    def send(self, packet: Any) -> None:
        self.sock.sendall(encode(packet, self.version))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = WAIT_S) -> Any:
        """The next packet; raises TimeoutError, or ConnectionError when the server closed."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no packet") from None
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                raise ConnectionError("closed by server")
            self.pending.extend(self.decoder.receive(data))
        return self.pending.pop(0)

    def recv_type(self, cls: type, timeout: float = WAIT_S) -> Any:
        packet = self.recv(timeout)
        assert isinstance(packet, cls), packet
        return packet

    def nothing(self, timeout: float = QUIET_S) -> bool:
        try:
            packet = self.recv(timeout)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected {packet}")

    def closed(self, timeout: float = WAIT_S) -> list[Any]:
        """Wait until the server closes; returns the packets that came before."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen.append(self.recv(max(0.05, deadline - time.monotonic())))
            except ConnectionError:
                return seen
            except TimeoutError:
                raise AssertionError(f"connection still open; got {seen}") from None

    def subscribe(
        self, *filters: str, qos: int = 0, pid: int = 1, properties: P.Properties | None = None
    ) -> P.Suback:
        self.send(P.Subscribe(pid, [P.SubscriptionRequest(f, qos) for f in filters], properties))
        return self.recv_type(P.Suback)

    def publish(self, topic: str, payload: bytes, qos: int = 0, pid: int = 1, retain: bool = False,
                properties: P.Properties | None = None) -> Any:  # fmt: skip
        """Publish and finish the QoS exchange; returns the ack (None for QoS 0)."""
        self.send(P.Publish(topic, payload, qos, retain, False, pid if qos else 0, properties))
        if qos == 1:
            return self.recv_type(P.Puback)
        if qos == 2:
            rec = self.recv_type(P.Pubrec)
            self.send(P.Pubrel(pid))
            self.recv_type(P.Pubcomp)
            return rec
        return None

    def disconnect(self, reason_code: int = 0) -> None:
        try:
            self.send(P.Disconnect(reason_code))
        finally:
            self.sock.close()

    def close(self) -> None:
        self.sock.close()


class PahoClient:
    """A paho-mqtt client with its network loop in a thread and received messages in a queue."""

    def __init__(self, port: int, client_id: str = "", version: int = P.MQTT_3_1_1, clean: bool = True,
                 transport: str = "tcp", **connect: Any) -> None:  # fmt: skip
        protocol = {P.MQTT_3_1: paho.MQTTv31, P.MQTT_3_1_1: paho.MQTTv311, P.MQTT_5: paho.MQTTv5}[version]
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol, "transport": transport}
        if version != P.MQTT_5:
            kwargs["clean_session"] = clean
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, **kwargs)
        self.messages: queue.Queue = queue.Queue()
        self.connected: queue.Queue = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, flags, rc, props: self.connected.put((flags, rc, props))
        if version == P.MQTT_5:
            connect.setdefault("clean_start", clean)
        self.client.connect("127.0.0.1", port, **connect)
        self.client.loop_start()
        self.flags, self.reason, self.properties = self.connected.get(timeout=WAIT_S)

    def subscribe(self, topic: Any, qos: int = 0, **kw: Any) -> None:
        done: queue.Queue = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, props: done.put(codes)
        self.client.subscribe(topic, qos, **kw)
        self.granted = done.get(timeout=WAIT_S)

    def unsubscribe(self, topic: Any, **kw: Any) -> Any:
        """Unsubscribe and wait for the UNSUBACK; returns its reason codes (empty before MQTT 5)."""
        done: queue.Queue = queue.Queue()
        self.client.on_unsubscribe = lambda c, u, mid, codes, props: done.put(codes)
        self.client.unsubscribe(topic, **kw)
        return done.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, **kw: Any) -> None:
        info = self.client.publish(topic, payload, qos, retain, **kw)
        info.wait_for_publish(WAIT_S)
        assert info.is_published()

    def get(self, timeout: float = WAIT_S) -> Any:
        return self.messages.get(timeout=timeout)

    def get_n(self, n: int, timeout: float = WAIT_S) -> list[Any]:
        return [self.get(timeout) for _ in range(n)]

    def none(self, timeout: float = QUIET_S) -> bool:
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected message on {m.topic}: {m.payload!r}")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
