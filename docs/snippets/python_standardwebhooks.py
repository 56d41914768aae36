# Verifying hookd's Standard Webhooks headers with the `standardwebhooks` PyPI library (FastAPI).
import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

app = FastAPI()
# The subscription's whsec_ secret, prefix included.
webhook = Webhook(os.environ['WEBHOOK_SECRET'])

# webhook-id values already processed (the delivery id). In production: a table with a unique key.
processed = set()


@app.post('/webhook/abstrakt')
async def handle_webhook(request: Request):
    try:
        # The raw bytes; verify() also refuses a timestamp more than 5 minutes off (a replay).
        event = webhook.verify(await request.body(), dict(request.headers))
    except WebhookVerificationError as e:
        return JSONResponse({'error': str(e)}, status_code=401)

    delivery_id = request.headers['webhook-id']
    if delivery_id in processed:
        # A retry of a delivery already handled: acknowledge it again, do nothing.
        return {'received': True, 'duplicate': True}
    print(f"{delivery_id} {event['request_id']} ({event['status']})")
    # Queue the work here, then remember the delivery and answer at once.
    processed.add(delivery_id)
    return {'received': True, 'request_id': event['request_id']}


if __name__ == '__main__':
    import uvicorn

    uvicorn.run(app, host='127.0.0.1', port=int(os.environ.get('PORT', '3000')))
