// A Fastify receiver that verifies the exact bytes hookd sent.
const crypto = require('crypto');
const fastify = require('fastify');

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

const app = fastify();

// A plugin is a context of its own: its JSON parser keeps the Buffer, and the rest of the app
// keeps Fastify's parser.
app.register(async (webhooks) => {
  webhooks.removeContentTypeParser('application/json');
  webhooks.addContentTypeParser(
    'application/json',
    { parseAs: 'buffer', bodyLimit: 5 * 1024 * 1024 },
    (request, body, done) => done(null, body)
  );

  webhooks.post('/webhook/abstrakt', async (request, reply) => {
    if (!verifySignature(request.body, request.headers['x-abstrakt-signature'])) {
      return reply.code(401).send({ error: 'Invalid signature' });
    }

    const deliveryId = request.headers['x-abstrakt-delivery'];
    if (processed.has(deliveryId)) {
      // A retry of a delivery already handled: acknowledge it again, do nothing.
      return { received: true, duplicate: true };
    }

    const event = JSON.parse(request.body.toString('utf8'));
    request.log.info(`${request.headers['x-abstrakt-event']} ${event.request_id} (${event.status})`);
    // Queue the work here, then remember the delivery and answer at once.
    processed.add(deliveryId);
    return { received: true, request_id: event.request_id };
  });
});

module.exports = app;

if (require.main === module) {
  const port = Number(process.env.PORT || 3000);
  app.listen({ port, host: '127.0.0.1' }).then((address) => console.log(`listening on ${address}`));
}
