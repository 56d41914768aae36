# A FastAPI receiver that verifies the exact bytes hookd sent.
import hashlib
import hmac
import json
import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()
WEBHOOK_SECRET = os.environ['WEBHOOK_SECRET'].encode('utf-8')

# X-Abstrakt-Delivery values already processed. In production: a table with a unique key.
processed = set()


def verify_signature(body: bytes, signature: str | None) -> bool:
    expected = hmac.new(WEBHOOK_SECRET, body, hashlib.sha256).hexdigest()
    # Compare bytes: compare_digest refuses str arguments with non-ASCII characters.
    return hmac.compare_digest(expected.encode(), (signature or '').encode())


# No model parameter: FastAPI would parse the body into it, and the bytes are what is signed.
@app.post('/webhook/abstrakt')
async def handle_webhook(request: Request):
    body = await request.body()  # the raw bytes
    if not verify_signature(body, request.headers.get('x-abstrakt-signature')):
        return JSONResponse({'error': 'Invalid signature'}, status_code=401)

    delivery_id = request.headers.get('x-abstrakt-delivery')
    if delivery_id in processed:
        # A retry of a delivery already handled: acknowledge it again, do nothing.
        return {'received': True, 'duplicate': True}

    event = json.loads(body)
    print(f"{request.headers.get('x-abstrakt-event')} {event['request_id']} ({event['status']})")
    # Queue the work here, then remember the delivery and answer at once.
    processed.add(delivery_id)
    return {'received': True, 'request_id': event['request_id']}


if __name__ == '__main__':
    import uvicorn

    uvicorn.run(app, host='127.0.0.1', port=int(os.environ.get('PORT', '3000')))
