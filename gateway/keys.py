"""API keys: clients send the key, the settings hold only its SHA-256.

    python -m gateway.keys      # prints a new random key and the digest to configure

A job belongs to the key that created it; its owner is a short id derived from the digest, so
neither the key nor its full digest is stored with the job.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence

from shared.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "mlq_"
OWNER_CHARS = 16  # 64 bits of the digest: enough to keep keys apart, short enough for logs


def digest(key: str) -> str:
    """The SHA-256 hex digest of a key, as configured in `MLQUEUE_API_KEYS`."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def owner_id(key_digest: str) -> str:
    """The id that job records carry for the key with this digest."""
    return key_digest[:OWNER_CHARS]


def match(key: str, digests: Sequence[str]) -> str | None:
    """The configured digest that `key` hashes to, or None; compares in constant time."""
    candidate = digest(key)
    found = None
    for known in digests:  # no early exit: the time does not depend on which key matched
        if hmac.compare_digest(candidate, known):
            found = known
    return found


def owner_for(settings: Settings, key: str | None) -> str | None:
    """Who sends `key`: the owner id of a configured key ("" when no keys are configured, so
    everyone is the same anonymous owner); None when keys are configured and `key` is none of
    them."""
    digests = settings.api_keys + settings.admin_keys
    if not digests:
        return ""
    found = match(key, digests) if key else None
    return None if found is None else owner_id(found)


def admin_owners(settings: Settings) -> list[str]:
    """The owner ids of the admin keys (they may see ownerless jobs)."""
    return [owner_id(d) for d in settings.admin_keys]


def log_auth_state(settings: Settings) -> None:
    """Say at startup whether requests need a key: auth being off must never go unnoticed."""
    if not settings.api_keys and not settings.admin_keys:
        log.warning("auth is off: MLQUEUE_API_KEYS is unset, every request is let in")
    else:
        log.info(
            "auth is on: %d API keys, %d admin keys",
            len(settings.api_keys),
            len(settings.admin_keys),
            extra={"api_keys": len(settings.api_keys), "admin_keys": len(settings.admin_keys)},
        )


def new_key() -> str:
    """A fresh random key (256 bits)."""
    return PREFIX + secrets.token_urlsafe(32)


def main() -> None:
    """Print a new key and its digest."""
    key = new_key()
    print(f"key (give to the client):       {key}")
    print(f"sha256 (MLQUEUE_API_KEYS entry): {digest(key)}")


if __name__ == "__main__":
    main()
