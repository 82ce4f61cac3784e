// Verifies one recorded delivery the way third-party receivers do.
//
// stdin: {"token": "...", "standardWebhooksSecret": "whsec_...",
//         "body": "<base64 of the exact body bytes>", "headers": {"name": "value", ...}}
// Prints "ok" and exits 0 when both signatures verify; else prints why and exits 1.
'use strict';
const crypto = require('crypto');
const { Webhook } = require('standardwebhooks');

let input = '';
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const req = JSON.parse(input);
  const body = Buffer.from(req.body, 'base64');
  const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k.toLowerCase(), v]));

  // The seed's Kustomer check, verbatim.
  const expected = crypto.createHmac('sha256', req.token).update(body).digest('hex');
  if (headers['x-kustomer-webhook-signature'] !== expected) {
    console.log(`kustomer signature mismatch: got ${headers['x-kustomer-webhook-signature']}, expected ${expected}`);
    process.exit(1);
  }

  // The published Standard Webhooks library.
  try {
    new Webhook(req.standardWebhooksSecret).verify(body.toString('utf8'), {
      'webhook-id': headers['webhook-id'],
      'webhook-timestamp': headers['webhook-timestamp'],
      'webhook-signature': headers['webhook-signature'],
    });
  } catch (e) {
    console.log(`standard webhooks verification failed: ${e.message}`);
    process.exit(1);
  }
  console.log('ok');
});
