// Keep express.json() for the whole app, and keep the raw bytes to verify: the `verify`
// option of express.json() sees the buffer before it is parsed.
const express = require('express');
const crypto = require('crypto');

const WEBHOOK_SECRET = process.env.WEBHOOK_SECRET;

const app = express();
app.use(
  express.json({
    limit: '5mb',
    verify: (req, res, buf) => {
      req.rawBody = buf;
    },
  })
);

function verifySignature(rawBody, signature) {
  const expected = crypto
    .createHmac('sha256', WEBHOOK_SECRET)
    .update(rawBody)
    .digest('hex');
  const a = Buffer.from(expected);
  const b = Buffer.from(String(signature || ''));
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

app.post('/webhook/abstrakt', (req, res) => {
  if (!Buffer.isBuffer(req.rawBody)) {
    return res.status(400).json({ error: 'Expected a JSON body' });
  }
  if (!verifySignature(req.rawBody, req.get('X-Abstrakt-Signature'))) {
    return res.status(401).json({ error: 'Invalid signature' });
  }

  const { request_id, status } = req.body; // parsed by express.json()
  console.log(`${req.get('X-Abstrakt-Event')} ${request_id} (${status})`);
  res.json({ received: true });
});

module.exports = app;

if (require.main === module) {
  const port = Number(process.env.PORT || 3000);
  app.listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
}
