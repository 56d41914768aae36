# Test harness for the Python recipes of docs/receiving-webhooks.md (tests/it/recipes.rs).
#
# Usage: WEBHOOK_SECRET=.. tests/receivers/recipes/python/.venv/bin/python serve.py RECIPE
# Imports the recipe by path (so its `if __name__ == '__main__'` block stays unused), serves it
# on 127.0.0.1 on an ephemeral port and prints `LISTENING <port>`: an ASGI `app` (FastAPI) with
# uvicorn; a Django views module (its file name has `django`) in a minimal Django project with
# the CSRF middleware on (the recipe's view must be exempt), served threaded by wsgiref.
import importlib.util
import socket
import sys


def load(path):
    spec = importlib.util.spec_from_file_location("recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_asgi(app):
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    # Listen before saying so: connections wait in the backlog until uvicorn accepts them
    # (uvicorn only listens once its startup is done).
    sock.listen(128)
    print("LISTENING %d" % sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


def serve_django(path):
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from django.conf import settings
    from django.urls import path as route

    settings.configure(
        DEBUG=False,
        SECRET_KEY="recipes-test-only",
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
    )
    import django

    django.setup()
    views = load(path)
    global urlpatterns
    urlpatterns = [route("webhook/abstrakt", views.abstrakt_webhook)]

    from django.core.wsgi import get_wsgi_application

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server(
        "127.0.0.1", 0, get_wsgi_application(), server_class=Server, handler_class=Quiet
    )
    print("LISTENING %d" % server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if "django" in sys.argv[1]:
        serve_django(sys.argv[1])
    else:
        serve_asgi(load(sys.argv[1]).app)
