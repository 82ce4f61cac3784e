'use strict';
// Checks the verify functions against the shared vectors: node --test
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test } = require('node:test');
const { verifySignature, verifyStandardWebhooks, verifyRequest } = require('./verify');

const vectors = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', 'test-vectors.json'), 'utf8'),
);

for (const c of vectors.cases) {
  test(`vector ${c.name}`, () => {
    const body = Buffer.from(c.bodyBase64, 'base64');
    assert.deepEqual(Buffer.from(c.body, 'utf8'), body, 'body and bodyBase64 differ');
    const tokens = c.tokens || [c.token];
    const header = c.signature === '' ? undefined : c.signature;
    if (c.header === 'webhook-signature') {
      const headers = { id: c.webhookId, timestamp: String(c.webhookTimestamp), signature: header };
      assert.equal(verifyStandardWebhooks(tokens, body, headers, c.now ?? c.webhookTimestamp), c.valid);
    } else {
      assert.equal(verifySignature(tokens, body, header), c.valid);
    }
  });
}

test('a signature of the wrong length is rejected, not thrown', () => {
  assert.equal(verifySignature('t', Buffer.from('x'), 'abcd'), false);
  assert.equal(verifyStandardWebhooks('t', Buffer.from('x'), { id: 'i', timestamp: '1', signature: 'v1,abc' }, 1), false);
});

test('a request passes on either header and fails when neither matches', () => {
  const body = Buffer.from('{}');
  const kustomer = require('crypto').createHmac('sha256', 'new-token-0123456').update(body).digest('hex');
  const headers = { 'x-kustomer-webhook-signature': kustomer };
  assert.equal(verifyRequest(['new-token-0123456', 'old-token-0123456'], body, headers, 0), true);
  assert.equal(verifyRequest(['old-token-0123456'], body, headers, 0), false);
});
