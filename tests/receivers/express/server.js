// Test receiver for hookd integration tests.
//
// The code between the "SEED" markers is the Express.js example from the
// Abstrakt "Webhook Configuration" page (the seed page, webhook-configuration.txt),
// copied verbatim. The only change to it is the final `app.listen(3000);`,
// which is replaced by the HARNESS listen block at the bottom
// (127.0.0.1, port $PORT or ephemeral, prints `LISTENING <port>`).
//
// HARNESS blocks are ours. They only observe: the result logger is registered
// (via app.use) before the seed's middleware, so it sees every request -- including
// ones rejected by express.json() -- and prints one `RESULT {...}` line to stdout when
// the response finishes. The error handler after the seed route turns a thrown
// exception into a 500 (or the error's own 4xx status for body-parser errors,
// like Express' default handler) and logs the stack to stderr.
//
// stdout protocol read by the Rust tests (other stdout lines, e.g. the seed's
// console.log output, are to be ignored):
//   LISTENING <port>
//   RESULT {"event":"request","status":..,"delivery":..,"attempt":..,"signature":..,"body":..}
// `body` is JSON.stringify(req.body) as a string (what the seed signs), or null if
// no body was parsed (Express 5 leaves req.body undefined in that case).
//
// Env: WEBHOOK_SECRET (read by the seed code), PORT (default 0 = ephemeral).

// ---------------------------- SEED (verbatim) ----------------------------
const express = require('express');
const crypto = require('crypto');

const app = express();
// ------------------- HARNESS: result logger (not seed) -------------------
app.use(function harnessResultLogger(req, res, next) {
  res.on('finish', () => {
    const header = (name) => {
      const v = req.headers[name];
      return v === undefined ? null : v;
    };
    const body = JSON.stringify(req.body);
    const line = 'RESULT ' + JSON.stringify({
      event: 'request',
      status: res.statusCode,
      delivery: header('x-abstrakt-delivery'),
      attempt: header('x-abstrakt-attempt'),
      signature: header('x-abstrakt-signature'),
      body: body === undefined ? null : body,
    });
    process.stdout.write(line + '\n');
  });
  next();
});
// ------------------------- SEED (verbatim, cont.) -------------------------
app.use(express.json());

const WEBHOOK_SECRET = process.env.WEBHOOK_SECRET;

app.post('/webhook/abstrakt', (req, res) => {
  // Verify signature
  const signature = req.headers['x-abstrakt-signature'];
  const payload = JSON.stringify(req.body);
  
  const expectedSignature = crypto
    .createHmac('sha256', WEBHOOK_SECRET)
    .update(payload)
    .digest('hex');
  
  if (signature !== expectedSignature) {
    return res.status(401).json({ error: 'Invalid signature' });
  }
  
  // Process the webhook
  const { request_id, status, result } = req.body;
  
  if (status === 'completed') {
    console.log(`Job ${request_id} completed!`);
    console.log(`Result: ${result.items[0].url}`);
    // Save to database, notify user, etc.
  }
  
  res.json({ received: true });
});

// ------------------------------ END SEED ------------------------------
// (seed's `app.listen(3000);` replaced by the harness listen below)

// ------------------- HARNESS: error handler + listen -------------------
// eslint-disable-next-line no-unused-vars
app.use(function harnessErrorHandler(err, req, res, next) {
  process.stderr.write(`HARNESS error: ${(err && err.stack) || err}\n`);
  if (res.headersSent) {
    return next(err); // let Express abort the connection; 'finish' may not fire
  }
  const s = err && (err.status || err.statusCode);
  const status = Number.isInteger(s) && s >= 400 && s < 600 ? s : 500;
  res.status(status).type('text/plain').send(status === 500 ? 'Internal Server Error' : String(err.message));
});

if (!process.env.WEBHOOK_SECRET) {
  process.stderr.write('HARNESS warning: WEBHOOK_SECRET is not set; the seed handler will throw (500)\n');
}

const harnessServer = app.listen(Number(process.env.PORT || 0), '127.0.0.1', (err) => {
  if (err) {
    process.stderr.write(`HARNESS listen failed: ${err.stack || err}\n`);
    process.exit(1);
  }
  process.stdout.write(`LISTENING ${harnessServer.address().port}\n`);
});
