'use strict';
// Example receiver for outbound-webhooks (Kustomer-compatible) deliveries.
//
//   WEBHOOK_TOKEN=... node server.js        (or WEBHOOK_TOKEN_FILE=/path/to/token)
//   WEBHOOK_TOKEN=new,previous ...          (during a rotation: any listed token)
//
// Verifies the signatures over the raw body (401 unless one matches), answers 200,
// and processes each event id once: a redelivery of an id already seen is
// acknowledged with 200 but not processed again. Processing here is printing
// `verified <id> <name> org=<org>` to stdout. Node standard library only.
const fs = require('fs');
const http = require('http');
const { verifyRequest } = require('./verify');

const MAX_BODY_BYTES = 2 * 1024 * 1024; // events are at most 1 MiB
const MAX_REMEMBERED_IDS = 100000;

// Comma-separated lists, so a rotation can give the new and the previous token.
function list(value) {
  return value.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

function loadTokens() {
  let tokens = [];
  if (process.env.WEBHOOK_TOKEN) {
    tokens = list(process.env.WEBHOOK_TOKEN);
  } else if (process.env.WEBHOOK_TOKEN_FILE) {
    // A file written by hand usually ends with a newline; the token does not.
    tokens = list(process.env.WEBHOOK_TOKEN_FILE).map((file) =>
      fs.readFileSync(file, 'utf8').replace(/[\r\n]+$/, ''),
    );
  }
  if (tokens.length === 0) {
    console.error('set WEBHOOK_TOKEN or WEBHOOK_TOKEN_FILE to the webhook signing token(s)');
    process.exit(2);
  }
  return tokens;
}

const tokens = loadTokens();
// Ids already processed, oldest first (a Set keeps insertion order). A real
// receiver keeps them in its database, with the processing, for longer than
// the sender retries (about 80 minutes).
const seen = new Set();

function remember(id) {
  seen.add(id);
  if (seen.size > MAX_REMEMBERED_IDS) seen.delete(seen.values().next().value);
}

function reply(res, status, text) {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(text + '\n');
}

function handle(req, res, body) {
  if (!verifyRequest(tokens, body, req.headers, Math.floor(Date.now() / 1000))) {
    return reply(res, 401, 'invalid signature');
  }
  let event;
  try {
    event = JSON.parse(body.toString('utf8'));
  } catch {
    event = undefined;
  }
  if (typeof event !== 'object' || event === null || Array.isArray(event)) {
    return reply(res, 400, 'body is not a JSON object');
  }
  const id = req.headers['webhook-id'] || event.id;
  if (typeof id !== 'string' || id === '') return reply(res, 400, 'no event id');
  if (seen.has(id)) return reply(res, 200, 'duplicate');
  remember(id);
  console.log(`verified ${id} ${event.name} org=${event.org}`);
  return reply(res, 200, 'ok');
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') return reply(res, 200, 'ok');
  if (req.method !== 'POST') return reply(res, 405, 'POST only');
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      if (!res.headersSent) {
        res.setHeader('Connection', 'close');
        reply(res, 413, 'body too large');
        res.on('finish', () => req.destroy());
      }
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (!res.headersSent) handle(req, res, Buffer.concat(chunks));
  });
});

const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT || 3000);
server.listen(port, host, () => {
  const addr = server.address();
  console.error(`listening on http://${addr.address}:${addr.port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
