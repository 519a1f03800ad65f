"""How settings meet the environment: STREAMSERVE_* variable names, the librdkafka
pass-through (``STREAMSERVE_RDKAFKA_[CONSUMER_|PRODUCER_]<OPTION>``), and masking secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

ENV_PREFIX = "STREAMSERVE_"
RDKAFKA_PREFIX = ENV_PREFIX + "RDKAFKA_"
_RDKAFKA_SCOPES = ("CONSUMER_", "PRODUCER_")
_SECRET_WORDS = ("password", "secret", "token", "key")


class RdkafkaSource(PydanticBaseSettingsSource):
    """Collects STREAMSERVE_RDKAFKA_[CONSUMER_|PRODUCER_]<OPTION> into three option dicts."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return rdkafka_options(os.environ)


def rdkafka_options(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Split STREAMSERVE_RDKAFKA_* variables into common, consumer and producer options."""
    found: dict[str, dict[str, str]] = {
        "rdkafka_common": {},
        "rdkafka_consumer": {},
        "rdkafka_producer": {},
    }
    for var, value in environ.items():
        if not var.startswith(RDKAFKA_PREFIX):
            continue
        rest = var[len(RDKAFKA_PREFIX) :]
        target = "rdkafka_common"
        for scope in _RDKAFKA_SCOPES:
            if rest.startswith(scope):
                target, rest = "rdkafka_" + scope[:-1].lower(), rest[len(scope) :]
        found[target][rest.lower().replace("_", ".")] = value
    return found


def env_name(field_name: str) -> str:
    """The environment variable that sets a settings field."""
    return ENV_PREFIX + field_name.upper()


def mask_url(url: str) -> str:
    """Hide the password of a URL such as redis://user:pass@host:6379/0."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def is_secret_option(option: str) -> bool:
    """A librdkafka option whose value is never shown (sasl.password, ssl.key.password...)."""
    return any(word in option for word in _SECRET_WORDS) and not option.endswith(".location")
