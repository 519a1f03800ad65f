"""The Schema Registry, through confluent-kafka's client (the `registry` extra): writer schemas
fetched by id once, parsed once, cached for the life of the worker (an id's schema never
changes). Only a schema id the worker has not seen yet costs a request."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from streamserve.core.decoding.formats import InputFormat
from streamserve.core.decoding.writer_schema import (
    SchemaParseError,
    WriterSchema,
    parse_writer_schema,
)
from streamserve.errors import ConfigError, MissingExtraError, RegistryUnavailable

log = logging.getLogger("streamserve.registry")
NOT_FOUND_RECHECK_S = 30.0  # an id the registry did not know is asked again after this long
_clients: dict[tuple[tuple[str, str], ...], Any] = {}
_clients_lock = threading.Lock()


FORMAT_LIBRARIES = {"avro": "fastavro", "protobuf": "google.protobuf", "json-schema": "json"}


def require_format(wire_format: str) -> None:
    """MissingExtraError unless the library a registry format is read or written with is
    installed: without it every record would fail to decode and become a dead letter."""
    try:
        importlib.import_module(FORMAT_LIBRARIES[wire_format])
    except ImportError:
        raise MissingExtraError(f"{wire_format} support", "registry") from None


def registry_client(config: Mapping[str, str]) -> Any:
    """One client per configuration in this process (a ``mock://`` URL gives confluent-kafka's
    in-process mock registry, which tests share with their serializers this way)."""
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError:  # httpx2, authlib, attrs, cachetools: the schemaregistry extra
        raise MissingExtraError("the Schema Registry client", "registry") from None
    key = tuple(sorted(config.items()))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = SchemaRegistryClient.new_client(dict(config))
        return _clients[key]


class RegistrySchemas:
    """Writer schemas by id (the ``WriterSchemas`` port of core/decoding/formats.py)."""

    def __init__(self, client: Any, input_format: InputFormat) -> None:
        self._client = client
        self._format = "serialized" if input_format == "protobuf" else None
        self._found: dict[int, WriterSchema] = {}
        self._missing: dict[int, float] = {}  # id -> when to ask again

    def check(self) -> None:
        """Raise RegistryUnavailable unless the registry answers (for start-up)."""
        try:
            self._client.get_subjects()
        except Exception as exc:
            raise RegistryUnavailable(f"Schema Registry unreachable: {_describe(exc)}") from None

    def resolve(self, schema_ids: set[int]) -> Mapping[int, WriterSchema | None]:
        now = time.monotonic()
        for schema_id in schema_ids:
            if schema_id in self._found or self._missing.get(schema_id, 0.0) > now:
                continue
            schema = self._fetch(schema_id)
            if schema is None:
                self._missing[schema_id] = now + NOT_FOUND_RECHECK_S
            else:
                self._found[schema_id] = schema
                self._missing.pop(schema_id, None)
        return {i: self._found.get(i) for i in schema_ids}

    def _fetch(self, schema_id: int) -> WriterSchema | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self._client.get_schema(schema_id, fmt=self._format)
            references = self._references(schema, {})
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                log.warning(
                    "schema id %d (or a schema it references) is not in the registry", schema_id
                )
                return None
            raise RegistryUnavailable(f"Schema Registry: {_describe(exc)}") from None
        except Exception as exc:  # connection refused, timeouts, TLS: the registry is away
            raise RegistryUnavailable(f"Schema Registry unreachable: {_describe(exc)}") from None
        try:
            return parse_writer_schema(
                schema_id, schema.schema_type or "AVRO", schema.schema_str, references
            )
        except SchemaParseError as exc:
            log.warning("%s; its records are dead letters", exc)
            return None

    def _references(self, schema: Any, found: dict[str, str]) -> dict[str, str]:
        """The schemas ``schema`` references (Avro named types, Protobuf imports), by reference
        name, each after those it references in turn."""
        for reference in schema.references or []:
            if reference.name in found:
                continue
            registered = self._client.get_version(
                reference.subject, reference.version, True, self._format
            )
            self._references(registered.schema, found)
            found[reference.name] = registered.schema.schema_str
        return found


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def prediction_schema_id(
    client: Any, subjects: list[str], schema_type: str, schema_str: str, auto_register: bool
) -> int:
    """The id predictions are written with: registered under each subject (``<topic>-value``),
    or, without ``auto_register``, looked up there (it must be registered already)."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    schema = Schema(schema_str, schema_type)
    ids = set()
    for subject in subjects:
        try:
            if auto_register:
                ids.add(client.register_schema(subject, schema))
            else:
                ids.add(client.lookup_schema(subject, schema).schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise ConfigError(
                    f"the prediction schema is not registered under {subject}: register it "
                    "(`streamserve schemas write` prints it) or set "
                    "STREAMSERVE_SCHEMA_REGISTRY_AUTO_REGISTER=true"
                ) from None
            raise RegistryUnavailable(f"Schema Registry: {_describe(exc)}") from None
        except Exception as exc:
            raise RegistryUnavailable(f"Schema Registry unreachable: {_describe(exc)}") from None
    if len(ids) != 1:
        raise ConfigError(f"the prediction schema has different ids under {subjects}: {ids}")
    return ids.pop()
