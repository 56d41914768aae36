# A Flask receiver that verifies the exact bytes hookd sent.
import hashlib
import hmac
import json
import os

from flask import Flask, jsonify, request

app = Flask(__name__)
WEBHOOK_SECRET = os.environ['WEBHOOK_SECRET'].encode('utf-8')

# X-Abstrakt-Delivery values already processed. In production: a table with a unique key.
processed = set()


def verify_signature(body: bytes, signature: str | None) -> bool:
    expected = hmac.new(WEBHOOK_SECRET, body, hashlib.sha256).hexdigest()
    # Compare bytes: compare_digest refuses str arguments with non-ASCII characters.
    return hmac.compare_digest(expected.encode(), (signature or '').encode())


@app.route('/webhook/abstrakt', methods=['POST'])
def handle_webhook():
    body = request.get_data()  # the raw bytes; read them before request.json or request.form
    if not verify_signature(body, request.headers.get('X-Abstrakt-Signature')):
        return jsonify({'error': 'Invalid signature'}), 401

    delivery_id = request.headers.get('X-Abstrakt-Delivery')
    if delivery_id in processed:
        # A retry of a delivery already handled: acknowledge it again, do nothing.
        return jsonify({'received': True, 'duplicate': True})

    event = json.loads(body)
    print(f"{request.headers.get('X-Abstrakt-Event')} {event['request_id']} ({event['status']})")
    # Queue the work here, then remember the delivery and answer at once.
    processed.add(delivery_id)
    return jsonify({'received': True, 'request_id': event['request_id']})


if __name__ == '__main__':
    app.run(host='127.0.0.1', port=int(os.environ.get('PORT', '3000')))
