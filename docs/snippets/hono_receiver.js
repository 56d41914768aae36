// A Hono receiver (on Node.js with @hono/node-server) that verifies the exact bytes hookd sent.
const crypto = require('crypto');
const { Hono } = require('hono');
const { serve } = require('@hono/node-server');

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

const app = new Hono();

app.post('/webhook/abstrakt', async (c) => {
  // The body as sent, before any validator or c.req.json() parses it.
  const rawBody = Buffer.from(await c.req.arrayBuffer());
  if (!verifySignature(rawBody, c.req.header('x-abstrakt-signature'))) {
    return c.json({ error: 'Invalid signature' }, 401);
  }

  const deliveryId = c.req.header('x-abstrakt-delivery');
  if (processed.has(deliveryId)) {
    // A retry of a delivery already handled: acknowledge it again, do nothing.
    return c.json({ received: true, duplicate: true });
  }

  const event = JSON.parse(rawBody.toString('utf8'));
  console.log(`${c.req.header('x-abstrakt-event')} ${event.request_id} (${event.status})`);
  // Queue the work here, then remember the delivery and answer at once.
  processed.add(deliveryId);
  return c.json({ received: true, request_id: event.request_id });
});

module.exports = app;

if (require.main === module) {
  const port = Number(process.env.PORT || 3000);
  serve({ fetch: app.fetch, port, hostname: '127.0.0.1' }, (info) =>
    console.log(`listening on 127.0.0.1:${info.port}`)
  );
}
