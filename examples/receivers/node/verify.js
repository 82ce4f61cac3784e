'use strict';
// Verifies a delivery's signatures with the receiver's tokens (one, or during
// a rotation two: the new and the previous one):
// - X-Kustomer-Webhook-Signature: lowercase hex HMAC-SHA256 of the exact body
//   bytes, keyed with a token (its UTF-8 bytes);
// - webhook-signature (Standard Webhooks): space-separated `v1,<base64
//   HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">` entries, one
//   per token the sender signs with, same key.
// A request is accepted when any signature matches any token.
const crypto = require('crypto');

const SIGNATURE_FORMAT = /^[0-9a-f]{64}$/;
const STANDARD_SIGNATURE_FORMAT = /^v1,[A-Za-z0-9+/]{43}=$/;
// Standard Webhooks: a timestamp further than this from now is refused (replay).
const TOLERANCE_SECONDS = 5 * 60;

function tokenList(tokens) {
  return Array.isArray(tokens) ? tokens : [tokens];
}

// Constant time for equal lengths, which callers check with the formats above.
function sameText(a, b) {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

/**
 * @param {string|string[]} tokens  the webhook's signing token(s) (Secret key `token`)
 * @param {Buffer} body             the raw request body, exactly as received
 * @param {string|undefined} signature  the X-Kustomer-Webhook-Signature header
 * @returns {boolean}
 */
function verifySignature(tokens, body, signature) {
  if (typeof signature !== 'string' || !SIGNATURE_FORMAT.test(signature)) {
    return false;
  }
  // The seed's check, with a constant-time comparison instead of `===`;
  // every token is tried, so the time does not tell which one matched.
  let matched = false;
  for (const token of tokenList(tokens)) {
    const computedSignature = crypto.createHmac('sha256', token).update(body).digest('hex');
    matched = sameText(computedSignature, signature) || matched;
  }
  return matched;
}

/**
 * @param {string|string[]} tokens  the webhook's signing token(s)
 * @param {Buffer} body             the raw request body, exactly as received
 * @param {{id?: string, timestamp?: string, signature?: string}} headers
 *   webhook-id, webhook-timestamp and webhook-signature
 * @param {number} nowSeconds       the current Unix time
 * @returns {boolean}
 */
function verifyStandardWebhooks(tokens, body, headers, nowSeconds) {
  const { id, timestamp, signature } = headers;
  if (typeof id !== 'string' || typeof timestamp !== 'string' || typeof signature !== 'string') {
    return false;
  }
  if (!/^[0-9]+$/.test(timestamp) || Math.abs(nowSeconds - Number(timestamp)) > TOLERANCE_SECONDS) {
    return false;
  }
  const received = signature.split(' ').filter((s) => STANDARD_SIGNATURE_FORMAT.test(s));
  let matched = false;
  for (const token of tokenList(tokens)) {
    const expected =
      'v1,' +
      crypto
        .createHmac('sha256', token)
        .update(`${id}.${timestamp}.`)
        .update(body)
        .digest('base64');
    for (const entry of received) matched = sameText(expected, entry) || matched;
  }
  return matched;
}

/**
 * The receiver's check: either header signed by one of `tokens`.
 * @param {string|string[]} tokens
 * @param {Buffer} body
 * @param {Record<string, string|string[]|undefined>} headers  lowercase names (Node's req.headers)
 * @param {number} nowSeconds
 */
function verifyRequest(tokens, body, headers, nowSeconds) {
  return (
    verifySignature(tokens, body, headers['x-kustomer-webhook-signature']) ||
    verifyStandardWebhooks(
      tokens,
      body,
      {
        id: headers['webhook-id'],
        timestamp: headers['webhook-timestamp'],
        signature: headers['webhook-signature'],
      },
      nowSeconds,
    )
  );
}

module.exports = { verifySignature, verifyStandardWebhooks, verifyRequest };
