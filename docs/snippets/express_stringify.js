// The seed page's Express receiver, hardened: it still signs JSON.stringify(req.body),
// which equals the bytes hookd sent because hookd sends that canonical form.
const express = require('express');
const crypto = require('crypto');

const WEBHOOK_SECRET = process.env.WEBHOOK_SECRET;

const app = express();
// express.json() answers 413 to bodies over 100 kB unless told otherwise.
app.use(express.json({ limit: '5mb' }));

function signatureMatches(payload, signature) {
  const expected = crypto
    .createHmac('sha256', WEBHOOK_SECRET)
    .update(payload)
    .digest('hex');
  const a = Buffer.from(expected);
  const b = Buffer.from(String(signature || ''));
  // timingSafeEqual throws on different lengths: check them first.
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

app.post('/webhook/abstrakt', (req, res) => {
  if (req.body === undefined || req.body === null || typeof req.body !== 'object') {
    return res.status(400).json({ error: 'Expected a JSON body' });
  }
  const payload = JSON.stringify(req.body);
  if (!signatureMatches(payload, req.get('X-Abstrakt-Signature'))) {
    return res.status(401).json({ error: 'Invalid signature' });
  }

  const { request_id, status, result } = req.body;
  console.log(`${req.get('X-Abstrakt-Event')} ${request_id} (${status})`);
  // Not every event has result.items (a completed job with no output, a failed one): read
  // it guarded. The seed's `result.items[0].url` throws there, answers 500, and is retried.
  const firstUrl = result?.items?.[0]?.url;
  if (status === 'completed' && firstUrl) {
    console.log(`Result: ${firstUrl}`);
  }
  // Hand the work to a queue and answer at once: hookd waits at most its timeout.
  res.json({ received: true });
});

module.exports = app;

if (require.main === module) {
  const port = Number(process.env.PORT || 3000);
  app.listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
}
