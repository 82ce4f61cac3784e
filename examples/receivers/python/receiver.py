#!/usr/bin/env python3
"""Example receiver for outbound-webhooks (Kustomer-compatible) deliveries.

    WEBHOOK_TOKEN=... python3 receiver.py     (or WEBHOOK_TOKEN_FILE=/path/to/token)
    WEBHOOK_TOKEN=new,previous ...            (during a rotation: any listed token)

Verifies the signatures over the raw body (401 unless one matches), answers 200,
and processes each event id once: a redelivery of an id already seen is
acknowledged with 200 but not processed again. Processing here is printing
`verified <id> <name> org=<org>` to stdout. Python standard library only.
"""
import collections
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from verify import verify_request

MAX_BODY_BYTES = 2 * 1024 * 1024  # events are at most 1 MiB
MAX_REMEMBERED_IDS = 100_000


def _list(value: str) -> "list[str]":
    """Comma-separated, so a rotation can give the new and the previous token."""
    return [item.strip() for item in value.split(",") if item.strip()]


def load_tokens() -> "list[str]":
    tokens: "list[str]" = []
    if os.environ.get("WEBHOOK_TOKEN"):
        tokens = _list(os.environ["WEBHOOK_TOKEN"])
    elif os.environ.get("WEBHOOK_TOKEN_FILE"):
        for path in _list(os.environ["WEBHOOK_TOKEN_FILE"]):
            # A file written by hand usually ends with a newline; the token does not.
            with open(path, encoding="utf-8") as f:
                tokens.append(f.read().rstrip("\r\n"))
    if not tokens:
        print("set WEBHOOK_TOKEN or WEBHOOK_TOKEN_FILE to the webhook signing token(s)", file=sys.stderr)
        sys.exit(2)
    return tokens


class SeenIds:
    """Ids already processed, oldest first. A real receiver keeps them in its
    database, with the processing, for longer than the sender retries (about
    80 minutes)."""

    def __init__(self, limit: int):
        self._ids: "collections.OrderedDict[str, None]" = collections.OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def first_time(self, event_id: str) -> bool:
        """Records the id; True if it was not seen before (check and record in one step)."""
        with self._lock:
            if event_id in self._ids:
                return False
            self._ids[event_id] = None
            if len(self._ids) > self._limit:
                self._ids.popitem(last=False)
            return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and `Expect: 100-continue`
    tokens: "list[str]" = []
    seen = SeenIds(MAX_REMEMBERED_IDS)
    print_lock = threading.Lock()

    def _reply(self, status: int, text: str, close: bool = False) -> None:
        data = (text + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, "ok")
        else:
            self._reply(405, "POST only")

    def do_POST(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._reply(411, "Content-Length required", close=True)
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return self._reply(400, "bad Content-Length", close=True)
        if length < 0 or length > MAX_BODY_BYTES:
            return self._reply(413, "body too large", close=True)
        body = self.rfile.read(length)  # the raw bytes: never re-serialize before verifying

        if not verify_request(self.tokens, body, self.headers):
            return self._reply(401, "invalid signature")
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            return self._reply(400, "body is not a JSON object")
        event_id = self.headers.get("webhook-id") or event.get("id")
        if not isinstance(event_id, str) or not event_id:
            return self._reply(400, "no event id")
        if not self.seen.first_time(event_id):
            return self._reply(200, "duplicate")
        with self.print_lock:
            print(f"verified {event_id} {event.get('name')} org={event.get('org')}", flush=True)
        self._reply(200, "ok")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep stdout for deliveries
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))


def main() -> None:
    Handler.tokens = load_tokens()
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "3000"))
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    bound_host, bound_port = server.server_address[:2]
    print(f"listening on http://{bound_host}:{bound_port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
