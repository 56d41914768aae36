# Test receiver for hookd integration tests.
#
# The code between the "SEED" markers is the Python Flask example from the
# Abstrakt "Webhook Configuration" page (the seed page, webhook-configuration.txt),
# copied verbatim (the page shows no app.run()/listen call).
#
# HARNESS code (below the seed) is ours:
#   * save_result(request_id, result): the page calls it but never defines it;
#     we record the calls in SAVED_RESULTS.
#   * an after_request hook printing one `RESULT {...}` line per request. Flask runs
#     after_request hooks for normal responses, HTTPExceptions (400/415 from
#     request.json) AND for the 500 it generates for an unhandled exception
#     (Flask.handle_exception -> finalize_request -> process_response), and we are
#     the only hook, so the logged status is the status the client receives.
#     Unhandled exceptions are still logged with traceback to stderr by Flask.
#   * werkzeug make_server on 127.0.0.1:$PORT (default 0 = ephemeral), threaded,
#     printing `LISTENING <port>` once listening.
#
# stdout protocol read by the Rust tests:
#   LISTENING <port>
#   RESULT {"event":"request","status":..,"delivery":..,"attempt":..,"signature":..,"body":..}
# `body` is request.get_data(as_text=True): the raw body bytes decoded as UTF-8
# (invalid bytes replaced), "" for an empty body.
#
# Env: WEBHOOK_SECRET (required by the seed code: KeyError at import if unset), PORT.

# ---------------------------- SEED (verbatim) ----------------------------
from flask import Flask, request, jsonify
import hmac
import hashlib
import os

app = Flask(__name__)
WEBHOOK_SECRET = os.environ['WEBHOOK_SECRET']

def verify_signature(payload, signature):
    expected = hmac.new(
        WEBHOOK_SECRET.encode(),
        payload,
        hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, signature)

@app.route('/webhook/abstrakt', methods=['POST'])
def handle_webhook():
    signature = request.headers.get('X-Abstrakt-Signature')
    
    if not verify_signature(request.data, signature):
        return jsonify({'error': 'Invalid signature'}), 401
    
    data = request.json
    
    if data['status'] == 'completed':
        # Process completed job
        save_result(data['request_id'], data['result'])
    
    return jsonify({'received': True})
# ------------------------------ END SEED ------------------------------


# ------------------------------- HARNESS -------------------------------
import json as _harness_json
import sys as _harness_sys
import threading as _harness_threading

SAVED_RESULTS = []
_harness_lock = _harness_threading.Lock()


def save_result(request_id, result):
    """Left undefined by the page; record the call."""
    with _harness_lock:
        SAVED_RESULTS.append((request_id, result))


def _harness_emit(line):
    # One write per line under a lock so threaded requests never interleave.
    with _harness_lock:
        _harness_sys.stdout.write(line + "\n")
        _harness_sys.stdout.flush()


@app.after_request
def _harness_log_result(response):
    record = {
        "event": "request",
        "status": response.status_code,
        "delivery": request.headers.get("X-Abstrakt-Delivery"),
        "attempt": request.headers.get("X-Abstrakt-Attempt"),
        "signature": request.headers.get("X-Abstrakt-Signature"),
        "body": request.get_data(as_text=True),
    }
    _harness_emit("RESULT " + _harness_json.dumps(record, separators=(",", ":")))
    return response


def _harness_main():
    from werkzeug.serving import make_server

    server = make_server(
        "127.0.0.1", int(os.environ.get("PORT", "0")), app, threaded=True
    )
    _harness_emit("LISTENING %d" % server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    _harness_main()
