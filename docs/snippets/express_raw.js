// An Express receiver that verifies the exact bytes hookd sent (the robust way).
const express = require('express');
const crypto = require('crypto');

const WEBHOOK_SECRET = process.env.WEBHOOK_SECRET;

// X-Abstrakt-Delivery values already processed. In production: a table with a unique key.
const processed = new Set();

function verifySignature(rawBody, signature) {
  const expected = crypto
    .createHmac('sha256', WEBHOOK_SECRET)
    .update(rawBody)
    .digest('hex');
  const a = Buffer.from(expected);
  const b = Buffer.from(String(signature || ''));
  // timingSafeEqual throws on different lengths: check them first.
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

const app = express();

// express.raw() leaves req.body as the Buffer received. Only on this route: the rest of the
// app may keep express.json().
app.post(
  '/webhook/abstrakt',
  express.raw({ type: 'application/json', limit: '5mb' }),
  (req, res) => {
    if (!Buffer.isBuffer(req.body)) {
      return res.status(415).json({ error: 'Expected Content-Type: application/json' });
    }
    if (!verifySignature(req.body, req.get('X-Abstrakt-Signature'))) {
      return res.status(401).json({ error: 'Invalid signature' });
    }

    const deliveryId = req.get('X-Abstrakt-Delivery');
    if (processed.has(deliveryId)) {
      // A retry of a delivery already handled: acknowledge it again, do nothing.
      return res.json({ received: true, duplicate: true });
    }

    const event = JSON.parse(req.body.toString('utf8'));
    console.log(`${req.get('X-Abstrakt-Event')} ${event.request_id} (${event.status})`);
    // Queue the work here, then remember the delivery and answer at once.
    processed.add(deliveryId);
    res.json({ received: true, request_id: event.request_id });
  }
);

module.exports = app;

if (require.main === module) {
  const port = Number(process.env.PORT || 3000);
  app.listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
}
