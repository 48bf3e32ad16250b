"""Webhook signatures: HMAC-SHA256 over ``"{timestamp}.{body}"`` with the webhook's secret.

Headers sent with every delivery (and what a receiver does with them):

- ``X-Cloudfilm-Timestamp``: Unix seconds when this attempt was signed. Refuse a request whose
  timestamp is more than :data:`REPLAY_WINDOW_S` from your clock (a replayed old request).
- ``X-Cloudfilm-Signature``: ``v1=`` + hex HMAC-SHA256(secret, timestamp + "." + raw body).
  Compute it over the raw bytes received and compare in constant time.
- ``X-Cloudfilm-Event-Id``: the event's change feed ``Sequence``; the same on every attempt and
  re-delivery of the event, so a receiver drops duplicates by it (delivery is at least once).

The secret (``whsec_…``) is shown once, when the webhook is registered; it is derived from the
archive's secret key and a nonce kept with the webhook, never stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SIGNATURE_HEADER = "X-Cloudfilm-Signature"
TIMESTAMP_HEADER = "X-Cloudfilm-Timestamp"
EVENT_ID_HEADER = "X-Cloudfilm-Event-Id"
EVENT_HEADER = "X-Cloudfilm-Event"
DELIVERY_HEADER = "X-Cloudfilm-Delivery"
ATTEMPT_HEADER = "X-Cloudfilm-Attempt"
#: What the README tells receivers: refuse timestamps further than this from their clock.
REPLAY_WINDOW_S = 300
SECRET_PREFIX = "whsec_"


def webhook_secret(archive_key: bytes, nonce: str) -> str:
    """The secret of the webhook holding ``nonce``, from the archive's key (``pacs.accounts.keys``)."""
    raw = hmac.new(archive_key, f"cloudfilm-webhook\x1f{nonce}".encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The value of ``X-Cloudfilm-Signature`` for ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def verify(secret: str, timestamp_header: str, signature_header: str, body: bytes, *, now: float,
           window_s: int = REPLAY_WINDOW_S) -> bool:  # fmt: skip
    """What a receiver checks (the README shows the same in a few lines): a fresh timestamp and a
    signature that matches one of the header's ``v1=`` values."""
    try:
        timestamp = int(timestamp_header)
    except ValueError:
        return False
    if abs(now - timestamp) > window_s:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, part.strip()) for part in signature_header.split(","))
