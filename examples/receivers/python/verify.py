"""Verifies X-Kustomer-Webhook-Signature: lowercase hex HMAC-SHA256 of the exact
body bytes, keyed with the webhook's token (its UTF-8 bytes)."""
import hashlib
import hmac
import re

_SIGNATURE_FORMAT = re.compile(r"[0-9a-f]{64}")


def verify_signature(token: str, body: bytes, signature: "str | None") -> bool:
    """True when `signature` (the header value) signs `body` (the raw request
    body, exactly as received) with `token`."""
    if signature is None or not _SIGNATURE_FORMAT.fullmatch(signature):
        return False
    computed = hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()
    # Constant time: the comparison does not stop at the first differing byte.
    return hmac.compare_digest(computed.encode("ascii"), signature.encode("ascii"))
