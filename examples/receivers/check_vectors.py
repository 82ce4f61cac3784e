#!/usr/bin/env python3
"""Checks test-vectors.json against an independent HMAC implementation: openssl.

For every case: `body` encodes (UTF-8) to exactly the bytes of `bodyBase64`;
where `signedWith` is given, `openssl dgst -sha256 -hmac TOKEN` over its body
reproduces `signature`; and `valid` is true exactly when, as openssl
computes it, the signature is the lowercase hex HMAC of the body by one of
the case's tokens (`tokens`, else `token`). For `webhook-signature` cases the
message is `{webhookId}.{webhookTimestamp}.{body}`, each space-separated
`v1,` entry is the base64 of that HMAC by the matching `signedWith` token,
and `valid` is true exactly when one entry matches one of the case's tokens
and the timestamp is within 5 minutes of `now`.
Standard library + the openssl command line tool only.
"""
import base64
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


TOLERANCE_SECONDS = 5 * 60


def openssl_hmac_hex(token: str, body: bytes) -> str:
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", token, "-r"],
        input=body, capture_output=True, check=True,
    ).stdout.decode("ascii")
    return out.split()[0].lower()


def openssl_standard_webhooks(token: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    message = f"{webhook_id}.{timestamp}.".encode("utf-8") + body
    return "v1," + base64.b64encode(bytes.fromhex(openssl_hmac_hex(token, message))).decode("ascii")


def check_standard_webhooks(c: dict, body: bytes, failures: list) -> None:
    name, wid, ts = c["name"], c["webhookId"], c["webhookTimestamp"]
    if "signedWith" in c:
        sw = c["signedWith"]
        signed = base64.b64decode(sw["bodyBase64"])
        got = " ".join(openssl_standard_webhooks(t, wid, ts, signed) for t in sw["tokens"])
        if got != c["signature"]:
            failures.append(f"{name}: openssl gives {got}, file has {c['signature']}")
    expected = {openssl_standard_webhooks(t, wid, ts, body) for t in c["tokens"]}
    fresh = abs(c.get("now", ts) - ts) <= TOLERANCE_SECONDS
    matched = any(entry in expected for entry in c["signature"].split())
    if (fresh and matched) != c["valid"]:
        failures.append(f"{name}: verdict {c['valid']} disagrees with openssl")


def main() -> int:
    if shutil.which("openssl") is None:
        print("check_vectors: missing tool: openssl", file=sys.stderr)
        return 1
    with open(os.path.join(HERE, "test-vectors.json"), encoding="utf-8") as f:
        doc = json.load(f)
    names = [c["name"] for c in doc["cases"]]
    required = {"valid", "tampered-body", "wrong-secret", "empty-body", "non-ascii-body",
                "signed-by-previous-token", "two-signatures-one-valid"}
    failures = []
    if not required <= set(names):
        failures.append(f"missing cases: {sorted(required - set(names))}")
    if len(names) != len(set(names)):
        failures.append("duplicate case names")
    for c in doc["cases"]:
        name = c["name"]
        body = base64.b64decode(c["bodyBase64"], validate=True)
        if c["body"].encode("utf-8") != body:
            failures.append(f"{name}: body and bodyBase64 differ")
        if c.get("header") == "webhook-signature":
            check_standard_webhooks(c, body, failures)
            continue
        if "signedWith" in c:
            sw = c["signedWith"]
            got = openssl_hmac_hex(sw["token"], base64.b64decode(sw["bodyBase64"]))
            if got != c["signature"]:
                failures.append(f"{name}: openssl gives {got}, file has {c['signature']}")
        expected = {openssl_hmac_hex(t, body) for t in c.get("tokens", [c.get("token")])}
        if (c["signature"] in expected) != c["valid"]:
            failures.append(f"{name}: verdict {c['valid']} disagrees with openssl")
    if any("café" in c["body"] for c in doc["cases"]) is False:
        failures.append("no non-ASCII body")
    for f in failures:
        print(f"check_vectors: FAIL {f}", file=sys.stderr)
    if failures:
        return 1
    print(f"check_vectors: {len(names)} cases agree with openssl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
