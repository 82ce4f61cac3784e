'use strict';
// Checks verifySignature against the shared vectors: node --test
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test } = require('node:test');
const { verifySignature } = require('./verify');

const vectors = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', 'test-vectors.json'), 'utf8'),
);

for (const c of vectors.cases) {
  test(`vector ${c.name}`, () => {
    const body = Buffer.from(c.bodyBase64, 'base64');
    assert.deepEqual(Buffer.from(c.body, 'utf8'), body, 'body and bodyBase64 differ');
    const header = c.signature === '' ? undefined : c.signature;
    assert.equal(verifySignature(c.token, body, header), c.valid);
  });
}

test('a signature of the wrong length is rejected, not thrown', () => {
  assert.equal(verifySignature('t', Buffer.from('x'), 'abcd'), false);
});
