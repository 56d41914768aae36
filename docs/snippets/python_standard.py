# Verifying hookd's Standard Webhooks headers (signature = "standard" or "both") in Flask.
import base64
import hashlib
import hmac
import json
import os
import re
import time

from flask import Flask, jsonify, request

TOLERANCE = 5 * 60  # seconds


class WebhookVerificationError(Exception):
    pass


def verify_webhook(secret: str, headers, body: bytes, now: float | None = None):
    """secret: "whsec_" + base64 of the key; headers: any case-insensitive mapping (Flask's
    request.headers); body: the raw bytes. Returns the parsed event, or raises."""
    msg_id = headers.get('webhook-id')
    timestamp = headers.get('webhook-timestamp')
    signatures = headers.get('webhook-signature')
    if not (msg_id and timestamp and signatures):
        raise WebhookVerificationError('missing webhook-id, -timestamp or -signature')
    now = time.time() if now is None else now
    # Refuse old (replayed) and far-future timestamps.
    if not re.fullmatch(r'[0-9]{1,15}', timestamp) or abs(now - int(timestamp)) > TOLERANCE:
        raise WebhookVerificationError('timestamp outside the tolerance')
    key = base64.b64decode(secret.removeprefix('whsec_'))
    signed = f'{msg_id}.{timestamp}.'.encode() + body
    expected = b'v1,' + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    # Several space-separated signatures while a secret rotates: one match is enough.
    if not any(hmac.compare_digest(s.encode(), expected) for s in signatures.split(' ')):
        raise WebhookVerificationError('no matching signature')
    return json.loads(body)


app = Flask(__name__)


@app.route('/webhook/abstrakt', methods=['POST'])
def handle_webhook():
    try:
        event = verify_webhook(os.environ['WEBHOOK_SECRET'], request.headers, request.get_data())
    except WebhookVerificationError as e:
        return jsonify({'error': str(e)}), 401
    # webhook-id is the delivery id (X-Abstrakt-Delivery): deduplicate on it.
    print(f"{request.headers['webhook-id']} {event['request_id']} ({event['status']})")
    return jsonify({'received': True})


if __name__ == '__main__':
    app.run(host='127.0.0.1', port=int(os.environ.get('PORT', '3000')))
