"""Checks verify_signature against the shared vectors: python3 -m unittest"""
import base64
import json
import os
import unittest

from verify import verify_signature

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
                header = c["signature"] or None
                self.assertIs(verify_signature(c["token"], body, header), c["valid"])

    def test_non_ascii_header_is_rejected_not_raised(self):
        self.assertFalse(verify_signature("t", b"x", "é" * 64))


if __name__ == "__main__":
    unittest.main()
