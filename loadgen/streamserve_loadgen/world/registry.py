"""A stand-in Schema Registry on loopback, for the benchmark and the demo: no Schema Registry
server installs on these machines, and confluent-kafka's mock client lives in one process only,
while a worker under test is another. It answers the REST calls a serializer and a worker make
(register a schema under a subject, read a schema by id, list subjects) from memory; a schema
registered twice under one subject keeps its id. Not a registry: no compatibility checks."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class Schemas:
    """Registered schemas: ids in registration order, versions per subject."""

    def __init__(self) -> None:
        self.by_id: dict[int, dict[str, Any]] = {}
        self.subjects: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        schema = {"schema": body["schema"], "schemaType": body.get("schemaType", "AVRO")}
        with self._lock:
            found = next((i for i, s in self.by_id.items() if s == schema), None)
            schema_id = found or len(self.by_id) + 1
            self.by_id[schema_id] = schema
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            version = versions.index(schema_id) + 1
        return {"id": schema_id, "subject": subject, "version": version, **schema}


class _Handler(BaseHTTPRequestHandler):
    schemas: Schemas

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/subjects":
            return self._answer(200, sorted(self.schemas.subjects))
        found = re.fullmatch(r"/schemas/ids/(\d+)", path)
        if found and int(found[1]) in self.schemas.by_id:
            return self._answer(200, self.schemas.by_id[int(found[1])])
        self._answer(404, {"error_code": 40403, "message": "Schema not found"})

    def do_POST(self) -> None:
        found = re.fullmatch(r"/subjects/([^/?]+)/versions", self.path.split("?", 1)[0])
        if not found:
            return self._answer(404, {"error_code": 404, "message": "not found"})
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self._answer(200, self.schemas.register(found[1], body))

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextmanager
def running_registry(port: int = 0) -> Iterator[str]:
    """A stand-in registry on 127.0.0.1 (``port`` 0: a free one); yields its URL."""
    handler = type("Handler", (_Handler,), {"schemas": Schemas()})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, name="registry", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
