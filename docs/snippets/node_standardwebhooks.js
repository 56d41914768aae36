// Verifying hookd's Standard Webhooks headers with the `standardwebhooks` npm library (Express).
const express = require('express');
const { Webhook, WebhookVerificationError } = require('standardwebhooks');

// The subscription's whsec_ secret, prefix included.
const webhook = new Webhook(process.env.WEBHOOK_SECRET);

// webhook-id values already processed (the delivery id). In production: a table with a unique key.
const processed = new Set();

const app = express();

app.post(
  '/webhook/abstrakt',
  express.raw({ type: 'application/json', limit: '5mb' }),
  (req, res) => {
    let event;
    try {
      // The raw Buffer; verify() also refuses a timestamp more than 5 minutes off (a replay).
      event = webhook.verify(req.body, req.headers);
    } catch (err) {
      if (err instanceof WebhookVerificationError) {
        return res.status(401).json({ error: err.message });
      }
      throw err;
    }
    const deliveryId = req.get('webhook-id');
    if (processed.has(deliveryId)) {
      // A retry of a delivery already handled: acknowledge it again, do nothing.
      return res.json({ received: true, duplicate: true });
    }
    console.log(`${deliveryId} ${event.request_id} (${event.status})`);
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
