#!/usr/bin/env python3
"""End-to-end smoke test of the example receivers: starts each real server on a
free loopback port (PORT=0; the receiver prints the port it bound), sends it
signed deliveries as the dispatcher does, and checks the answers and what it
printed:

  - a correctly signed event                      -> 200, printed once
  - the same event id again (a redelivery)        -> 200, not printed again
  - a tampered body, a wrong secret, no signature -> 401
  - only webhook-signature, one entry or two of which one is valid
                                                  -> 200; with an old timestamp -> 401
  - an event without a webhook-id header          -> 200, deduplicated on the envelope's id
  - a non-ASCII (UTF-8) body                      -> 200, printed
  - a signed body that is not a JSON object       -> 400
  - no token configured                           -> exits with status 2
  - WEBHOOK_TOKEN_FILE with a trailing newline    -> the newline is not part of the token
  - a token list (WEBHOOK_TOKEN=new,previous, or two files), as during a
    rotation                                      -> either token accepted, another refused

    python3 smoke_test.py [node] [python] [go] [rust]     (default: all four)

Builds the Go and Rust receivers first (Rust's target directory is
$CARGO_TARGET_DIR, default ~/.cache/outbound-webhooks/receiver-rust-target,
outside the source tree). Python standard library only.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "a3f1c2d4e5b6978812345678deadbeef00112233445566778899aabbccddeeff"
NEW_TOKEN = "c" * 64
WRONG_TOKEN = "b" * 64
RECEIVERS = ["node", "python", "go", "rust"]
TOOLS = {"node": "node", "python": sys.executable, "go": "go", "rust": "cargo"}


def rust_target_dir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(cache, "outbound-webhooks", "receiver-rust-target")


def command_for(name: str, tmp: str) -> "tuple[list[str], str]":
    """Builds the receiver if needed; returns (argv, working directory)."""
    directory = os.path.join(HERE, name)
    if name == "node":
        return ["node", "server.js"], directory
    if name == "python":
        return [sys.executable, "receiver.py"], directory
    if name == "go":
        binary = os.path.join(tmp, "go-receiver")
        subprocess.run(["go", "build", "-o", binary, "."], cwd=directory, check=True)
        return [binary], directory
    if name == "rust":
        target = rust_target_dir()
        env = dict(os.environ, CARGO_TARGET_DIR=target)
        subprocess.run(["cargo", "build", "--locked", "--quiet"], cwd=directory, env=env, check=True)
        return [os.path.join(target, "debug", "outbound-webhooks-receiver")], directory
    raise ValueError(name)


def sign(token: str, body: bytes) -> str:
    return hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()


def envelope(event_id: str, name: str, data: dict) -> bytes:
    return json.dumps(
        {"id": event_id, "name": name, "org": "acme", "partition": "acme", "data": data,
         "createdAt": "2026-11-27T10:00:00.000Z", "persist": True},
        separators=(",", ":"), ensure_ascii=False,
    ).encode("utf-8")


def std_sign(token: str, event_id: str, ts: str, body: bytes) -> str:
    digest = hmac.new(token.encode(), f"{event_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers_for(body: bytes, event_id, token=TOKEN, signature=None, with_id=True, std_tokens=None,
                signed_body=None, age=0) -> dict:
    """The headers the dispatcher sends (SPEC: The delivery), signed over
    `signed_body` (default `body`): the Kustomer header by `token` (or
    `signature`; False: absent) and webhook-signature by each of `std_tokens`
    (default [token]; []: absent), timestamped `age` seconds ago."""
    ts = str(int(time.time()) - age)
    signed = body if signed_body is None else signed_body
    h = {"Content-Type": "application/json", "User-Agent": "outbound-webhooks/smoke-test",
         "X-Kustomer-Webhook-Event": json.loads(body)["name"]}
    if signature is not False:
        h["X-Kustomer-Webhook-Signature"] = signature or sign(token, signed)
    if with_id:
        h.update({"webhook-id": event_id, "webhook-timestamp": ts})
        entries = [std_sign(t, event_id, ts, signed) for t in ([token] if std_tokens is None else std_tokens)]
        if entries:
            h["webhook-signature"] = " ".join(entries)
    return h


class Receiver:
    def __init__(self, name: str, argv: "list[str]", cwd: str, token_env: dict):
        self.name = name
        env = dict(os.environ, PORT="0", HOST="127.0.0.1")
        env.pop("WEBHOOK_TOKEN", None)
        env.pop("WEBHOOK_TOKEN_FILE", None)
        env.update(token_env)
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.stdout: "queue.Queue[str]" = queue.Queue()
        self.stderr_lines: "list[str]" = []
        self.port: "queue.Queue[int]" = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            self.stdout.put(line.decode("utf-8", "replace").rstrip("\n"))

    def _read_stderr(self):
        for line in self.proc.stderr:
            text = line.decode("utf-8", "replace").rstrip("\n")
            self.stderr_lines.append(text)
            m = re.search(r"listening on http://\[?[0-9a-fA-F:.]+\]?:(\d+)", text)
            if m:
                self.port.put(int(m.group(1)))

    def wait_port(self, timeout: float) -> int:
        try:
            return self.port.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no 'listening on' line within {timeout}s; stderr: {self.stderr_lines}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def expect_line(r: Receiver, want: str, timeout: float = 5.0):
    try:
        got = r.stdout.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"expected stdout line {want!r}, got nothing")
    if got != want:
        raise AssertionError(f"expected stdout line {want!r}, got {got!r}")


def post_once(port: int, body: bytes, headers: dict) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def token_config(name: str, argv: "list[str]", cwd: str, tmp: str) -> None:
    """No token: exits with status 2. WEBHOOK_TOKEN_FILE (newline-terminated,
    as `echo` writes it): the token without the newline."""
    r = Receiver(name, argv, cwd, {})
    try:
        code = r.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("started without a token instead of exiting")
    finally:
        r.stop()
    if code != 2:
        raise AssertionError(f"without a token: exit status {code}, want 2")
    print("  ok  no token configured: exit status 2")
    token_file = os.path.join(tmp, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    r = Receiver(name, argv, cwd, {"WEBHOOK_TOKEN_FILE": token_file})
    try:
        port = r.wait_port(30)
        body = envelope("65f1c0ffee00000000000d04", "kustomer.team.create", {"type": "team", "id": "t1"})
        for token, want in ((TOKEN, 200), (TOKEN + "\n", 401)):
            got = post_once(port, body, headers_for(body, "65f1c0ffee00000000000d04", token=token))
            if got != want:
                raise AssertionError(f"WEBHOOK_TOKEN_FILE: HTTP {got}, want {want}")
        expect_line(r, "verified 65f1c0ffee00000000000d04 kustomer.team.create org=acme")
        print("  ok  WEBHOOK_TOKEN_FILE (trailing newline not part of the token)")
    finally:
        r.stop()
    new_file = os.path.join(tmp, "next-token")
    with open(new_file, "w") as f:
        f.write(NEW_TOKEN + "\n")
    for what, env in (("WEBHOOK_TOKEN=new, previous", {"WEBHOOK_TOKEN": f"{NEW_TOKEN}, {TOKEN}"}),
                      ("WEBHOOK_TOKEN_FILE=new,previous", {"WEBHOOK_TOKEN_FILE": f"{new_file},{token_file}"})):
        r = Receiver(name, argv, cwd, env)
        try:
            port = r.wait_port(30)
            for n, (token, want) in enumerate(((TOKEN, 200), (NEW_TOKEN, 200), (WRONG_TOKEN, 401))):
                event_id = f"65f1c0ffee0000000000f{n}08"
                body = envelope(event_id, "kustomer.team.update", {"type": "team", "id": "t2"})
                got = post_once(port, body, headers_for(body, event_id, token=token))
                if got != want:
                    raise AssertionError(f"{what}: signed by token {n}: HTTP {got}, want {want}")
                if want == 200:
                    expect_line(r, f"verified {event_id} kustomer.team.update org=acme")
            print(f"  ok  {what}: either token accepted, another refused")
        finally:
            r.stop()


def smoke(name: str, argv: "list[str]", cwd: str) -> None:
    r = Receiver(name, argv, cwd, {"WEBHOOK_TOKEN": TOKEN})
    try:
        port = r.wait_port(30)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # one keep-alive connection

        def post(body: bytes, headers: dict, want: int, what: str):
            conn.request("POST", "/webhooks/kustomer", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != want:
                raise AssertionError(f"{what}: HTTP {resp.status}, want {want}")
            print(f"  ok  {what}: {resp.status}")

        a_id, b_id, c_id = "65f1c0ffee00000000000a01", "65f1c0ffee00000000000b02", "65f1c0ffee00000000000c03"
        a = envelope(a_id, "kustomer.conversation.create", {"type": "conversation", "id": "c1", "attributes": {"status": "open"}})
        post(a, headers_for(a, a_id), 200, "signed event")
        expect_line(r, f"verified {a_id} kustomer.conversation.create org=acme")
        post(a, headers_for(a, a_id), 200, "same event id again (redelivery)")
        tampered = a.replace(b'"open"', b'"done"')
        post(tampered, headers_for(tampered, a_id, signed_body=a), 401, "tampered body")
        post(a, headers_for(a, a_id, token=WRONG_TOKEN), 401, "wrong secret")
        post(a, headers_for(a, a_id, signature=False, std_tokens=[]), 401, "no signature header")
        d_id, e_id = "65f1c0ffee00000000000d06", "65f1c0ffee00000000000e07"
        d = envelope(d_id, "kustomer.user.create", {"type": "user", "id": "u7"})
        post(d, headers_for(d, d_id, signature=False, age=400), 401, "only webhook-signature, timestamp 400 s old")
        post(d, headers_for(d, d_id, signature=False), 200, "only webhook-signature")
        expect_line(r, f"verified {d_id} kustomer.user.create org=acme")
        e = envelope(e_id, "kustomer.user.update", {"type": "user", "id": "u8"})
        post(e, headers_for(e, e_id, signature=False, std_tokens=[WRONG_TOKEN, TOKEN]), 200,
             "webhook-signature with two signatures, one valid")
        expect_line(r, f"verified {e_id} kustomer.user.update org=acme")
        b = envelope(b_id, "kustomer.customer.update", {"type": "customer", "id": "u1", "attributes": {}})
        post(b, headers_for(b, b_id, with_id=False), 200, "event without webhook-id header")
        expect_line(r, f"verified {b_id} kustomer.customer.update org=acme")
        post(b, headers_for(b, b_id), 200, "same envelope id again, now with webhook-id")
        c = envelope(c_id, "kustomer.message.create", {"type": "message", "id": "m1", "attributes": {"preview": "café ☕ 日本"}})
        post(c, headers_for(c, c_id), 200, "non-ASCII body")
        expect_line(r, f"verified {c_id} kustomer.message.create org=acme")
        for bad in (b"null", b"[1]", b"not json"):
            h = headers_for(a, "65f1c0ffee00000000000e05")
            h["X-Kustomer-Webhook-Signature"] = sign(TOKEN, bad)
            post(bad, h, 400, f"signed body that is not a JSON object ({bad.decode()})")
        conn.close()
        time.sleep(0.3)  # let any stray line arrive before checking there is none
        if not r.stdout.empty():
            raise AssertionError(f"unexpected stdout line {r.stdout.get()!r} (processed twice?)")
        print("  ok  each event printed exactly once")
    finally:
        r.stop()


def main() -> int:
    names = sys.argv[1:] or RECEIVERS
    unknown = [n for n in names if n not in RECEIVERS]
    if unknown:
        print(f"smoke_test: unknown receiver(s) {unknown}; choose from {RECEIVERS}", file=sys.stderr)
        return 2
    missing = [TOOLS[n] for n in names if shutil.which(TOOLS[n]) is None]
    if missing:
        print(f"smoke_test: missing tool(s): {', '.join(missing)}", file=sys.stderr)
        return 1
    failed = []
    with tempfile.TemporaryDirectory(prefix="receiver-smoke-") as tmp:
        for name in names:
            started = time.monotonic()
            print(f"[smoke] {name}")
            try:
                argv, cwd = command_for(name, tmp)
                smoke(name, argv, cwd)
                token_config(name, argv, cwd, tmp)
                print(f"[smoke] {name}: PASS ({time.monotonic() - started:.1f}s)")
            except (AssertionError, OSError, subprocess.CalledProcessError, http.client.HTTPException) as e:
                print(f"[smoke] {name}: FAIL: {e}", file=sys.stderr)
                failed.append(name)
    if failed:
        print(f"[smoke] FAILED: {' '.join(failed)}", file=sys.stderr)
        return 1
    print(f"[smoke] all passed: {' '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
