"""Who may open an AudioHook connection: its API key, and the HTTP message signature that
Genesys Cloud adds when the key has a client secret.

Genesys sends ``X-API-KEY`` with every upgrade request. When the integration was given a
client secret it also signs the request (RFC 9421, HTTP Message Signatures): a
``Signature-Input`` dictionary member lists the covered components (``@request-target``,
``@authority``, ``audiohook-organization-id``, ``audiohook-session-id``,
``audiohook-correlation-id``, ``x-api-key``) and the parameters ``keyid`` (the API key),
``nonce``, ``alg="hmac-sha256"``, ``created`` and ``expires``; ``Signature`` carries the
HMAC-SHA256 of the signature base under the base64-decoded secret. Every covered
component must be one of those we can rebuild, the six above must all be covered, the
times must hold within ``clock_skew_s`` (and ``created`` be at most
``signature_max_age_s`` old), and a nonce is accepted once while its signature is valid,
so a captured request cannot be replayed. Keys and digests are compared in constant time;
nothing here logs a key, a secret or a signature.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from emostream.stream.audiohook_config import AudioHookConfig
from emostream.stream.transports.audiohook.structured_fields import (
    InnerList,
    Item,
    Member,
    parse_dictionary,
    serialize_inner_list,
)

#: What Genesys covers, and so what a signed request must cover.
REQUIRED = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
DERIVED = ("@request-target", "@authority", "@method", "@path", "@query")
ALGORITHM = "hmac-sha256"
MAX_NONCES = 100_000  # remembered at once (each for its signature's lifetime)


class AuthError(Exception):
    """A refused connection: ``reason`` is the metrics label, ``detail`` the sentence the
    client gets (it names no secret)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Request:
    """The parts of an upgrade request that authentication reads."""

    field: Callable[[str], str | None]  # a header's canonical value by lower-case name
    target: str  # path and query, as sent: /v1/audiohook?x=1
    authority: str  # the Host header


def canonical(values: list[str]) -> str | None:
    """A header's value as a signature covers it: each line trimmed, repeats joined."""
    if not values:
        return None
    return ", ".join(" ".join(v.strip().split("\r\n")) for v in values)


class Authenticator:
    """Checks upgrade requests against ``AudioHookConfig``; remembers recent nonces."""

    def __init__(self, config: AudioHookConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self._keys = [(k.encode(), k) for k in config.api_keys]
        self._nonces: dict[str, float] = {}  # nonce -> when it may be forgotten

    def check(self, request: Request) -> str:
        """The API key the request authenticates as; ``AuthError`` otherwise."""
        if not self._keys:
            raise AuthError(
                "unauthorized",
                "AudioHook is not enabled on this server: no API keys are configured",
            )
        given = request.field("x-api-key")
        if not given:
            raise AuthError("unauthorized", "the X-API-KEY header is missing")
        key = self._known(given)
        if key is None:
            raise AuthError("unauthorized", "the X-API-KEY is not valid here")
        secret = self.config.secret(key)
        if secret:
            self._verify(request, key, secret)
        return key

    def _known(self, given: str) -> str | None:
        """The configured key ``given`` is; every key is compared, in constant time."""
        raw = given.encode("utf-8", "surrogateescape")
        found = None
        for ours, name in self._keys:
            if hmac.compare_digest(raw, ours):
                found = name
        return found

    def _verify(self, request: Request, key: str, secret: bytes) -> None:
        inputs, signatures = request.field("signature-input"), request.field("signature")
        if not inputs or not signatures:
            raise AuthError(
                "bad_signature",
                "this API key has a client secret: the request must be signed "
                "(Signature-Input and Signature headers)",
            )
        try:
            members, sigs = parse_dictionary(inputs), parse_dictionary(signatures)
        except ValueError as exc:
            raise AuthError("bad_signature", f"a signature header is malformed: {exc}") from None
        label, inner = _signature_of(members, key)
        sig = sigs.get(label)
        if not isinstance(sig, Item) or not isinstance(sig.value, bytes):
            raise AuthError("bad_signature", f"no Signature for label {label!r}")
        params = dict(inner.params)
        self._check_times(params)
        base = _base(request, inner)
        expected = hmac.new(secret, base.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, sig.value):
            raise AuthError("bad_signature", "the signature does not match")
        self._once(str(params["nonce"]), params)

    def _check_times(self, params: Mapping[str, object]) -> None:
        now, skew = self.clock(), self.config.clock_skew_s
        created, expires = params.get("created"), params.get("expires")
        if not isinstance(created, int) or isinstance(created, bool):
            raise AuthError("bad_signature", "the signature has no integer 'created'")
        if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool)):
            raise AuthError("bad_signature", "the signature's 'expires' is not an integer")
        if created > now + skew:
            raise AuthError("stale_signature", "the signature was created in the future")
        if now - created > self.config.signature_max_age_s + skew:
            raise AuthError(
                "stale_signature",
                f"the signature is older than {self.config.signature_max_age_s:g} s",
            )
        if expires is not None and expires + skew < now:
            raise AuthError("stale_signature", "the signature has expired")
        nonce = params.get("nonce")
        if not isinstance(nonce, str) or len(nonce) < 16:
            raise AuthError("bad_signature", "the signature has no nonce (16 characters or more)")

    def _once(self, nonce: str, params: Mapping[str, object]) -> None:
        """Refuse a nonce seen while its signature could still be valid."""
        now = self.clock()
        if len(self._nonces) >= MAX_NONCES or len(self._nonces) % 256 == 0:
            self._nonces = {n: t for n, t in self._nonces.items() if t > now}
            while len(self._nonces) >= MAX_NONCES:  # a flood of valid signatures: oldest go
                del self._nonces[next(iter(self._nonces))]
        if self._nonces.get(nonce, 0.0) > now:
            raise AuthError("replayed_signature", "this signature (its nonce) was used already")
        created = params["created"]
        assert isinstance(created, int)
        self._nonces[nonce] = (
            created + self.config.signature_max_age_s + 2 * self.config.clock_skew_s
        )


def _signature_of(members: dict[str, Member], key: str) -> tuple[str, InnerList]:
    """The signature made with ``key`` (its ``keyid``), with supported parameters."""
    for label, member in members.items():
        if not isinstance(member, InnerList):
            continue
        params = dict(member.params)
        if params.get("keyid") != key:
            continue
        alg = params.get("alg", ALGORITHM)
        if alg != ALGORITHM:
            raise AuthError("bad_signature", f"signature algorithm {alg!r} is not supported")
        return label, member
    raise AuthError("bad_signature", "no signature names this X-API-KEY as its keyid")


def _base(request: Request, inner: InnerList) -> str:
    """The signature base (RFC 9421, section 2.5): one line per covered component, then
    ``@signature-params``."""
    lines: list[str] = []
    seen: set[str] = set()
    for item in inner.items:
        name = item.value
        if not isinstance(name, str) or item.params or name != name.lower() or name in seen:
            raise AuthError("bad_signature", f"covered component {name!r} is not supported")
        seen.add(name)
        value = _component(request, name)
        if value is None:
            raise AuthError("bad_signature", f"covered component {name!r} is not in the request")
        lines.append(f'"{name}": {value}')
    missing = [c for c in REQUIRED if c not in seen]
    if missing:
        raise AuthError("bad_signature", f"the signature does not cover {', '.join(missing)}")
    lines.append(f'"@signature-params": {serialize_inner_list(inner)}')
    return "\n".join(lines)


def _component(request: Request, name: str) -> str | None:
    if not name.startswith("@"):
        return None if name in ("signature", "signature-input") else request.field(name)
    path, _, query = request.target.partition("?")
    derived = {
        "@request-target": request.target,
        "@authority": request.authority.lower(),
        "@method": "GET",
        "@path": path,
        "@query": "?" + query,
    }
    if name not in derived:
        raise AuthError("bad_signature", f"derived component {name!r} is not supported")
    return derived[name]
