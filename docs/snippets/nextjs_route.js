// A Next.js (App Router) route handler: app/webhook/abstrakt/route.js.
import crypto from 'node:crypto';

const WEBHOOK_SECRET = process.env.WEBHOOK_SECRET;

// X-Abstrakt-Delivery values already processed. In production: a table with a unique key.
const processed = new Set();

function verifySignature(rawBody, signature) {
  const expected = crypto
    .createHmac('sha256', WEBHOOK_SECRET)
    .update(rawBody, 'utf8')
    .digest('hex');
  const a = Buffer.from(expected);
  const b = Buffer.from(String(signature || ''));
  // timingSafeEqual throws on different lengths: check them first.
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

export async function POST(request) {
  // The body as sent: request.text() before anything parses it. The body can be read once,
  // so a request.json() before this leaves nothing to verify.
  const rawBody = await request.text();
  if (!verifySignature(rawBody, request.headers.get('x-abstrakt-signature'))) {
    return Response.json({ error: 'Invalid signature' }, { status: 401 });
  }

  const deliveryId = request.headers.get('x-abstrakt-delivery');
  if (processed.has(deliveryId)) {
    // A retry of a delivery already handled: acknowledge it again, do nothing.
    return Response.json({ received: true, duplicate: true });
  }

  const event = JSON.parse(rawBody);
  console.log(`${request.headers.get('x-abstrakt-event')} ${event.request_id} (${event.status})`);
  // Queue the work here, then remember the delivery and answer at once.
  processed.add(deliveryId);
  return Response.json({ received: true, request_id: event.request_id });
}
