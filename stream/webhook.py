"""Deliver a call's summary to ``calls.webhook_url`` when it ends: signed, retried, never
in a call's way.

The body is the summary's JSON. With ``calls.webhook_secret`` set, the header
``X-Emostream-Signature: t=<unix seconds>,v1=<hex>`` carries HMAC-SHA256 of
``"<t>.<body>"`` with the secret (the Stripe scheme: the timestamp is signed too, so a
receiver can refuse a replay; ``verify`` is the receiver's side). A failed attempt (a
connection error, a timeout, a status other than 2xx) is logged and counted and retried
with doubling backoff for ``calls.webhook_retry_s``; delivery runs in its own task, so a
receiver that is down never slows a session.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time

import httpx

from emostream import metrics
from emostream.stream.calls_config import CallsConfig

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Emostream-Signature"
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The signature header's value for ``body`` at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(body: bytes, header: str, secret: str, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver checks: the signature matches and its timestamp is recent."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(body, secret, timestamp), header)


async def deliver(body: bytes, config: CallsConfig, session: str) -> bool:
    """POST ``body`` until a 2xx or ``webhook_retry_s`` is spent; whether it arrived."""
    deadline = time.monotonic() + config.webhook_retry_s
    backoff = FIRST_BACKOFF_S
    async with httpx.AsyncClient(timeout=config.webhook_timeout_s) as client:
        while True:
            headers = {"Content-Type": "application/json"}
            if config.webhook_secret:
                headers[SIGNATURE_HEADER] = sign(body, config.webhook_secret, int(time.time()))
            try:
                r = await client.post(config.webhook_url, content=body, headers=headers)
                if 200 <= r.status_code < 300:
                    metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
                    return True
                why = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            if time.monotonic() + backoff > deadline:
                log.warning("summary of %s not delivered (%s); giving up", session, why)
                metrics.WEBHOOK_DELIVERIES.labels("given_up").inc()
                return False
            log.warning("summary of %s not delivered (%s); retry in %.0f s", session, why, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
