# A Django view that verifies the exact bytes hookd sent (views.py; urls.py:
# path('webhook/abstrakt', views.abstrakt_webhook)).
import hashlib
import hmac
import json
import os

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

WEBHOOK_SECRET = os.environ['WEBHOOK_SECRET'].encode('utf-8')

# X-Abstrakt-Delivery values already processed. In production: a model with a unique field.
processed = set()


def verify_signature(body: bytes, signature: str | None) -> bool:
    expected = hmac.new(WEBHOOK_SECRET, body, hashlib.sha256).hexdigest()
    # Compare bytes: compare_digest refuses str arguments with non-ASCII characters.
    return hmac.compare_digest(expected.encode(), (signature or '').encode())


@csrf_exempt  # hookd sends no CSRF token: the signature authenticates the request
@require_POST
def abstrakt_webhook(request):
    body = request.body  # the raw bytes; read them before anything reads the stream
    if not verify_signature(body, request.headers.get('X-Abstrakt-Signature')):
        return JsonResponse({'error': 'Invalid signature'}, status=401)

    delivery_id = request.headers.get('X-Abstrakt-Delivery')
    if delivery_id in processed:
        # A retry of a delivery already handled: acknowledge it again, do nothing.
        return JsonResponse({'received': True, 'duplicate': True})

    event = json.loads(body)
    print(f"{request.headers.get('X-Abstrakt-Event')} {event['request_id']} ({event['status']})")
    # Queue the work here, then remember the delivery and answer at once.
    processed.add(delivery_id)
    return JsonResponse({'received': True, 'request_id': event['request_id']})
