"""The worker's HTTP endpoint: /metrics (Prometheus text format), /healthz and /readyz (JSON,
200 or 503). A daemon thread; it only reads what the loop publishes in Telemetry."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamserve.errors import ConfigError
from streamserve.telemetry.prometheus import Telemetry

log = logging.getLogger("streamserve.http")


def serve(telemetry: Telemetry, host: str, port: int) -> ThreadingHTTPServer:
    """Start serving on ``host:port`` in a daemon thread; ``shutdown()`` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(telemetry.registry))
            elif path in ("/healthz", "/readyz"):
                state = telemetry.health.live() if path == "/healthz" else telemetry.health.ready()
                body = json.dumps(state).encode()
                self._send(200 if state["ok"] else 503, "application/json", body)
            else:
                self._send(404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); "
            "set STREAMSERVE_HTTP_PORT to a free port, or 0 to turn the endpoint off"
        ) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log.info("serving /metrics, /healthz and /readyz on %s:%d", host, server.server_port)
    return server
