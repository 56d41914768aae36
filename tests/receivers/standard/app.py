# Standard Webhooks receiver for hookd integration tests (tests/it/standard_webhooks.rs).
#
# Verifies every request with the reference Python library of Standard Webhooks
# (https://www.standardwebhooks.com, PyPI package `standardwebhooks`, pinned in
# tests/receivers/flask/requirements.txt; its venv is tests/receivers/flask/.venv, installed
# by scripts/test-deps.sh):
#
#     Webhook(secret).verify(body, headers)
#
# which checks webhook-id, webhook-timestamp (within 5 minutes of now) and that one of the
# space-separated v1 signatures of webhook-signature is the HMAC-SHA256 of
# "{id}.{timestamp}.{body}" keyed with the base64-decoded part of the whsec_ secret.
#
# Answers:
#   200 {"verified": true}       verified (unless FAIL_FIRST says otherwise, below)
#   401 {"error": "..."}         verification failed (the library's message)
#   503 {"error": "planned"}     the first FAIL_FIRST *verified* requests, to make hookd retry
#
# stdout protocol read by the Rust tests (one line each, flushed):
#   LISTENING <port>
#   RESULT {"event":"request","status":..,"error":..,"webhook_id":..,"webhook_timestamp":..,
#           "webhook_signature":..,"abstrakt_signature":..,"delivery":..,"attempt":..,
#           "body":..,"received_at":..}
# `status` is what the client receives; `error` is the verification error or null;
# `received_at` is this process's Unix time in seconds (float) when the request arrived;
# `body` is the raw body decoded as UTF-8 (invalid bytes replaced).
#
# Env: STANDARD_WEBHOOK_SECRET (required, a whsec_ secret), PORT (default 0 = ephemeral),
#      FAIL_FIRST (default 0).

import json
import os
import sys
import threading
import time

from flask import Flask, jsonify, request
from standardwebhooks import Webhook

SECRET = os.environ["STANDARD_WEBHOOK_SECRET"]
FAIL_FIRST = int(os.environ.get("FAIL_FIRST", "0"))

app = Flask(__name__)
webhook = Webhook(SECRET)
_lock = threading.Lock()
_verified_count = 0


def _emit(line):
    # One write per line under a lock so that threaded requests never interleave.
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


@app.before_request
def _arrived():
    request.environ["hookd_test.received_at"] = time.time()


@app.route("/", defaults={"path": ""}, methods=["POST"])
@app.route("/<path:path>", methods=["POST"])
def handle(path):
    global _verified_count
    body = request.get_data()
    try:
        webhook.verify(body, dict(request.headers))
    except Exception as e:  # WebhookVerificationError, or a malformed header
        request.environ["hookd_test.error"] = "%s: %s" % (type(e).__name__, e)
        return jsonify({"error": str(e)}), 401
    with _lock:
        _verified_count += 1
        planned_failure = _verified_count <= FAIL_FIRST
    if planned_failure:
        return jsonify({"error": "planned"}), 503
    return jsonify({"verified": True})


@app.after_request
def _log_result(response):
    h = request.headers
    record = {
        "event": "request",
        "status": response.status_code,
        "error": request.environ.get("hookd_test.error"),
        "webhook_id": h.get("webhook-id"),
        "webhook_timestamp": h.get("webhook-timestamp"),
        "webhook_signature": h.get("webhook-signature"),
        "abstrakt_signature": h.get("X-Abstrakt-Signature"),
        "delivery": h.get("X-Abstrakt-Delivery"),
        "attempt": h.get("X-Abstrakt-Attempt"),
        "body": request.get_data(as_text=True),
        "received_at": request.environ.get("hookd_test.received_at"),
    }
    _emit("RESULT " + json.dumps(record, separators=(",", ":")))
    return response


def main():
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(os.environ.get("PORT", "0")), app, threaded=True)
    _emit("LISTENING %d" % server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
