"""Completion webhooks: the signature, the SSRF guard and the Redis keys gateway and worker share.

A job submitted with a `callback_url` is entered in `DUE` (job id -> when to look at it next) in
the same pipeline as its record. A worker's periodic sweep (`worker.webhooks`) takes what is due:
a job not finished yet is looked at again a second later; a finished one gets a delivery task on
its own queue (`QUEUE`), leased for `LEASE_SECONDS` so that a lost task is sent again. A failed
attempt is rescheduled in `DUE` with exponential backoff and jitter (never as a Celery countdown:
an ETA message older than the broker's visibility timeout would be delivered twice). Delivery is
at least once: one delivery id per job, reused by every attempt, lets receivers drop repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Collection
from typing import Final
from urllib.parse import urlsplit

from shared.errors import InvalidInput
from shared.jobstore import PREFIX
from shared.tasks import DELIVER_WEBHOOK, WEBHOOK_QUEUE

QUEUE: Final = WEBHOOK_QUEUE
DELIVER: Final = DELIVER_WEBHOOK
DUE: Final = f"{PREFIX}:webhooks:due"
LEASE_SECONDS: Final = 120
SIGNATURE_HEADER: Final = "Mlqueue-Signature"
DELIVERY_HEADER: Final = "Mlqueue-Delivery"
# Cloud metadata endpoints that are not in a private, loopback or link-local range.
METADATA: Final = frozenset({ipaddress.ip_address("fd00:ec2::254")})


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Mlqueue-Signature` value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance: int = 300) -> bool:
    """What a receiver does: recompute the signature and refuse an old timestamp."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, timestamp, body).rsplit("v1=", 1)[1]
    fresh = abs(now - timestamp) <= tolerance
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


def backoff(attempt: int, base: float, jitter: float) -> float:
    """Seconds before attempt `attempt + 1`: base * 2^(attempt-1), times 1 +/- `jitter` (a
    number in [-1, 1] scaled to 20 %), so that many failing receivers do not retry in step."""
    return float(base * 2 ** (attempt - 1) * (1 + 0.2 * jitter))


def check_url(url: str, allowed_hosts: Collection[str]) -> None:
    """`InvalidInput` unless `url` is http(s) to a host that resolves only to public addresses
    (or is listed in `allowed_hosts`): no loopback, private, link-local or metadata targets."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("callback_url: must be an http or https URL with a host")
    host = parts.hostname.lower()
    if host in allowed_hosts:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"callback_url: cannot resolve host {host!r}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if _internal(address):
            raise InvalidInput(
                f"callback_url: host {host!r} resolves to {address}, a loopback, private, "
                "link-local or metadata address (allow it with MLQUEUE_WEBHOOK_ALLOWED_HOSTS)"
            )


def _internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in METADATA
    )
