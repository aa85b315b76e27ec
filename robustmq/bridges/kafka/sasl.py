"""SASL for the Kafka listener: PLAIN and SCRAM-SHA-256/512 against the ``[auth]`` users.

Pure state machines: ``step(client_bytes)`` returns the server's bytes, or raises ``SaslFailed``;
``principal`` is set once the exchange succeeded. SCRAM salts each exchange afresh, since the
config holds plain passwords (RFC 5802 / 7677).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from robustmq.auth import Authenticator, Principal
from robustmq.bridges.kafka.limits import SCRAM_ITERATIONS

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


class SaslFailed(Exception):
    """The credentials are refused or the exchange is malformed."""


class SaslExchange:
    def __init__(self, mechanism: str, authenticator: Authenticator, passwords: dict[str, str]) -> None:
        self.mechanism = mechanism
        self.authenticator = authenticator
        self._passwords = passwords
        self.principal: Principal | None = None
        self.done = False
        self._scram: dict[str, str | bytes] = {}

    def step(self, data: bytes) -> bytes:
        if self.done:
            raise SaslFailed("authentication already finished")
        if self.mechanism == "PLAIN":
            return self._plain(data)
        return self._scram_step(data)

    def _plain(self, data: bytes) -> bytes:
        parts = data.split(b"\x00")
        if len(parts) != 3:
            raise SaslFailed("malformed PLAIN message")
        user, password = parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
        principal = self.authenticator.authenticate(user=user, password=password)
        if principal is None:
            principal = self.authenticator.authenticate(token=password)
        if principal is None:
            raise SaslFailed("authentication failed: bad user name or password")
        self.principal = principal
        self.done = True
        return b""

    def _scram_step(self, data: bytes) -> bytes:
        algo = _HASHES[self.mechanism]
        text = data.decode("utf-8", "replace")
        if not self._scram:
            if not text.startswith(("n,", "y,")):
                raise SaslFailed("malformed SCRAM client-first message")
            bare = text.split(",", 2)[2] if text.count(",") >= 2 else ""
            attrs = dict(a.split("=", 1) for a in bare.split(",") if "=" in a)
            user = attrs.get("n", "").replace("=2C", ",").replace("=3D", "=")
            nonce = attrs.get("r", "")
            password = self._passwords.get(user)
            if not nonce or password is None:
                raise SaslFailed("authentication failed: bad user name or password")
            salt = os.urandom(16)
            server_nonce = nonce + base64.b64encode(os.urandom(18)).decode()
            first = f"r={server_nonce},s={base64.b64encode(salt).decode()},i={SCRAM_ITERATIONS}"
            salted = hashlib.pbkdf2_hmac(algo, password.encode(), salt, SCRAM_ITERATIONS)
            self._scram = {
                "user": user,
                "bare": bare,
                "first": first,
                "nonce": server_nonce,
                "salted": salted,
            }
            return first.encode()
        attrs = dict(a.split("=", 1) for a in text.split(",") if "=" in a)
        if attrs.get("r") != self._scram["nonce"] or "p" not in attrs:
            raise SaslFailed("malformed SCRAM client-final message")
        without_proof = text.rsplit(",p=", 1)[0]
        auth_message = f"{self._scram['bare']},{self._scram['first']},{without_proof}".encode()
        salted = self._scram["salted"]
        assert isinstance(salted, bytes)
        client_key = hmac.new(salted, b"Client Key", algo).digest()
        stored_key = hashlib.new(algo, client_key).digest()
        signature = hmac.new(stored_key, auth_message, algo).digest()
        try:
            proof = base64.b64decode(attrs["p"])
        except ValueError:
            raise SaslFailed("malformed SCRAM proof") from None
        if len(proof) != len(signature):
            raise SaslFailed("authentication failed: bad user name or password")
        candidate = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(algo, candidate).digest(), stored_key):
            raise SaslFailed("authentication failed: bad user name or password")
        user = self._scram["user"]
        assert isinstance(user, str)
        self.principal = self.authenticator.principal(user)
        if self.principal is None:
            raise SaslFailed("authentication failed: bad user name or password")
        server_key = hmac.new(salted, b"Server Key", algo).digest()
        verifier = base64.b64encode(hmac.new(server_key, auth_message, algo).digest()).decode()
        self.done = True
        return f"v={verifier}".encode()
