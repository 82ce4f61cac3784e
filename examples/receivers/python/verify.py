"""Verifies a delivery's signatures with the receiver's tokens (one, or during a
rotation two: the new and the previous one):

- X-Kustomer-Webhook-Signature: lowercase hex HMAC-SHA256 of the exact body
  bytes, keyed with a token (its UTF-8 bytes);
- webhook-signature (Standard Webhooks): space-separated
  `v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`
  entries, one per token the sender signs with, same key.

A request is accepted when any signature matches any token."""
import base64
import hashlib
import hmac
import re
import time

_SIGNATURE_FORMAT = re.compile(r"[0-9a-f]{64}")
_STANDARD_SIGNATURE_FORMAT = re.compile(r"v1,[A-Za-z0-9+/]{43}=")
# Standard Webhooks: a timestamp further than this from now is refused (replay).
TOLERANCE_SECONDS = 5 * 60


def _token_list(tokens: "str | list[str]") -> "list[str]":
    return [tokens] if isinstance(tokens, str) else list(tokens)


def verify_signature(tokens: "str | list[str]", body: bytes, signature: "str | None") -> bool:
    """True when `signature` (the X-Kustomer-Webhook-Signature header value)
    signs `body` (the raw request body, exactly as received) with one of
    `tokens`."""
    if signature is None or not _SIGNATURE_FORMAT.fullmatch(signature):
        return False
    matched = False
    # Every token is tried, so the time does not tell which one matched.
    for token in _token_list(tokens):
        computed = hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()
        # Constant time: the comparison does not stop at the first differing byte.
        matched = hmac.compare_digest(computed.encode("ascii"), signature.encode("ascii")) or matched
    return matched


def verify_standard_webhooks(
    tokens: "str | list[str]",
    body: bytes,
    webhook_id: "str | None",
    timestamp: "str | None",
    signature: "str | None",
    now: "float | None" = None,
) -> bool:
    """True when one `v1,` entry of `signature` (the webhook-signature header)
    signs `{webhook_id}.{timestamp}.{body}` with one of `tokens`, and
    `timestamp` is within 5 minutes of `now` (default: the current time)."""
    if webhook_id is None or timestamp is None or signature is None:
        return False
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    received = [s.encode("ascii") for s in signature.split(" ") if _STANDARD_SIGNATURE_FORMAT.fullmatch(s)]
    message = f"{webhook_id}.{timestamp}.".encode("utf-8") + body
    matched = False
    for token in _token_list(tokens):
        digest = hmac.new(token.encode("utf-8"), message, hashlib.sha256).digest()
        expected = b"v1," + base64.b64encode(digest)
        for entry in received:
            matched = hmac.compare_digest(expected, entry) or matched
    return matched


def verify_request(tokens: "str | list[str]", body: bytes, headers, now: "float | None" = None) -> bool:
    """The receiver's check: either header signed by one of `tokens`.
    `headers` maps header names (any case, as http.server's do) to values."""
    return verify_signature(tokens, body, headers.get("X-Kustomer-Webhook-Signature")) or verify_standard_webhooks(
        tokens,
        body,
        headers.get("webhook-id"),
        headers.get("webhook-timestamp"),
        headers.get("webhook-signature"),
        now,
    )
