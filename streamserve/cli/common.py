"""What every `streamserve` command shares: exit codes, the settings, registry schemas."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from streamserve.config import Settings, load_settings
from streamserve.errors import (
    ConfigError,
    DeliveryError,
    FeatureStoreError,
    ModelBundleError,
    RegistryUnavailable,
    StreamserveError,
)
from streamserve.telemetry.logs import fatal

EXIT_CODES: list[tuple[type[StreamserveError], int]] = [
    (ConfigError, 2),
    (ModelBundleError, 3),
    (FeatureStoreError, 4),
    (DeliveryError, 5),
    (RegistryUnavailable, 7),
    (StreamserveError, 5),
]


def exit_on_error(
    action: Callable[[], Any], exit_codes: list[tuple[type[StreamserveError], int]] = EXIT_CODES
) -> Any:
    """Run a command body; a streamserve error prints one line and exits with its code."""
    from confluent_kafka import KafkaException

    try:
        return action()
    except StreamserveError as exc:
        code = next((c for kind, c in exit_codes if isinstance(exc, kind)), 5)
        fatal(str(exc))
        sys.exit(code)
    except KafkaException as exc:
        fatal(f"Kafka error: {exc.args[0].str()}")
        sys.exit(5)


def command_settings(**overrides: Any) -> Settings:
    """The settings, the command's options (None: not given) over the environment."""
    return exit_on_error(
        lambda: load_settings(**{k: v for k, v in overrides.items() if v is not None})
    )


def worker_settings(**overrides: Any) -> Settings:
    """The settings, with every librdkafka option checked: what a worker starts with."""
    from streamserve.io.kafka import check_client_options

    settings = command_settings(**overrides)
    exit_on_error(lambda: check_client_options(settings))
    return settings


def prediction_schemas(settings: Settings) -> Any:
    """Writer schemas from the registry, to read predictions written in a registry format
    (STREAMSERVE_OUTPUT_FORMAT); None for JSON."""
    if settings.output_format == "json":
        return None
    from streamserve.io.registry import RegistrySchemas, registry_client, require_format

    require_format(settings.output_format)
    client = registry_client(settings.schema_registry_config())
    return RegistrySchemas(client, settings.output_format)
