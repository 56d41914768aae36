// Verifying hookd's Standard Webhooks headers (signature = "standard" or "both") in Node.js.
const express = require('express');
const crypto = require('crypto');

const TOLERANCE_SECONDS = 5 * 60;

class WebhookVerificationError extends Error {}

// secret: "whsec_" + base64 of the key. headers: lower-case names (Node's req.headers).
// rawBody: the Buffer received. Returns the parsed event, or throws.
function verifyWebhook(secret, headers, rawBody, nowSeconds = Math.floor(Date.now() / 1000)) {
  const id = headers['webhook-id'];
  const timestamp = headers['webhook-timestamp'];
  const signatures = headers['webhook-signature'];
  if (!id || !timestamp || !signatures) {
    throw new WebhookVerificationError('missing webhook-id, -timestamp or -signature');
  }
  // Refuse old (replayed) and far-future timestamps.
  const age = nowSeconds - Number(timestamp);
  if (!/^[0-9]+$/.test(timestamp) || Math.abs(age) > TOLERANCE_SECONDS) {
    throw new WebhookVerificationError('timestamp outside the tolerance');
  }
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const expected = Buffer.from(
    'v1,' +
      crypto
        .createHmac('sha256', key)
        .update(`${id}.${timestamp}.`)
        .update(rawBody)
        .digest('base64')
  );
  // Several space-separated signatures while a secret rotates: one match is enough.
  const matches = signatures.split(' ').some((signature) => {
    const received = Buffer.from(signature);
    return received.length === expected.length && crypto.timingSafeEqual(received, expected);
  });
  if (!matches) {
    throw new WebhookVerificationError('no matching signature');
  }
  return JSON.parse(rawBody.toString('utf8'));
}

const app = express();

app.post(
  '/webhook/abstrakt',
  express.raw({ type: 'application/json', limit: '5mb' }),
  (req, res) => {
    if (!Buffer.isBuffer(req.body)) {
      return res.status(415).json({ error: 'Expected Content-Type: application/json' });
    }
    let event;
    try {
      event = verifyWebhook(process.env.WEBHOOK_SECRET, req.headers, req.body);
    } catch (err) {
      if (err instanceof WebhookVerificationError) {
        return res.status(401).json({ error: err.message });
      }
      throw err;
    }
    // webhook-id is the delivery id (X-Abstrakt-Delivery): deduplicate on it.
    console.log(`${req.headers['webhook-id']} ${event.request_id} (${event.status})`);
    res.json({ received: true });
  }
);

module.exports = { app, verifyWebhook, WebhookVerificationError };

if (require.main === module) {
  const port = Number(process.env.PORT || 3000);
  app.listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
}
