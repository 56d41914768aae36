# Test harness for the Flask snippets of docs/receiving-webhooks.md (tests/it/receiving_docs.rs).
#
# Usage: WEBHOOK_SECRET=.. tests/receivers/flask/.venv/bin/python serve_flask.py SNIPPET
# Imports the snippet by path (so its `if __name__ == '__main__'` block stays unused), serves
# its `app` on 127.0.0.1 on an ephemeral port (threaded, like `flask run`) and prints
# `LISTENING <port>`.
import importlib.util
import sys

from werkzeug.serving import make_server

spec = importlib.util.spec_from_file_location("snippet", sys.argv[1])
snippet = importlib.util.module_from_spec(spec)
spec.loader.exec_module(snippet)

server = make_server("127.0.0.1", 0, snippet.app, threaded=True)
print("LISTENING %d" % server.server_port, flush=True)
try:
    server.serve_forever()
finally:
    server.server_close()
