"""Checks the verify functions against the shared vectors: python3 -m unittest"""
import base64
import hashlib
import hmac
import json
import os
import unittest

from verify import verify_request, verify_signature, verify_standard_webhooks

VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test-vectors.json")


class SharedVectors(unittest.TestCase):
    def test_vectors(self):
        with open(VECTORS, encoding="utf-8") as f:
            cases = json.load(f)["cases"]
        self.assertGreaterEqual(len(cases), 5)
        for c in cases:
            with self.subTest(c["name"]):
                body = base64.b64decode(c["bodyBase64"])
                self.assertEqual(c["body"].encode("utf-8"), body)
                tokens = c.get("tokens", [c.get("token")])
                header = c["signature"] or None
                if c.get("header") == "webhook-signature":
                    ts = c["webhookTimestamp"]
                    got = verify_standard_webhooks(tokens, body, c["webhookId"], str(ts), header, c.get("now", ts))
                else:
                    got = verify_signature(tokens, body, header)
                self.assertIs(got, c["valid"])

    def test_non_ascii_header_is_rejected_not_raised(self):
        self.assertFalse(verify_signature("t", b"x", "é" * 64))
        self.assertFalse(verify_standard_webhooks("t", b"x", "i", "1", "v1,é", now=1))

    def test_a_request_passes_on_either_header_and_fails_when_neither_matches(self):
        body = b"{}"
        headers = {"X-Kustomer-Webhook-Signature": hmac.new(b"new-token-0123456", body, hashlib.sha256).hexdigest()}
        self.assertTrue(verify_request(["new-token-0123456", "old-token-0123456"], body, headers, now=0))
        self.assertFalse(verify_request(["old-token-0123456"], body, headers, now=0))


if __name__ == "__main__":
    unittest.main()
