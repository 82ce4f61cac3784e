'use strict';
// Verifies X-Kustomer-Webhook-Signature: lowercase hex HMAC-SHA256 of the exact
// body bytes, keyed with the webhook's token (its UTF-8 bytes).
const crypto = require('crypto');

const SIGNATURE_FORMAT = /^[0-9a-f]{64}$/;

/**
 * @param {string|Buffer} token  the webhook's signing token (Secret key `token`)
 * @param {Buffer} body          the raw request body, exactly as received
 * @param {string|undefined} signature  the X-Kustomer-Webhook-Signature header
 * @returns {boolean}
 */
function verifySignature(token, body, signature) {
  if (typeof signature !== 'string' || !SIGNATURE_FORMAT.test(signature)) {
    return false;
  }
  // The seed's check, with a constant-time comparison instead of `===`.
  const computedSignature = crypto
    .createHmac('sha256', token)
    .update(body)
    .digest('hex');
  // Both are 64 ASCII characters here, so the lengths match as
  // timingSafeEqual requires.
  return crypto.timingSafeEqual(
    Buffer.from(computedSignature, 'utf8'),
    Buffer.from(signature, 'utf8'),
  );
}

module.exports = { verifySignature };
