"""The effective settings as environment variables, secrets masked: what a worker logs at
start and `streamserve config` prints."""

from __future__ import annotations

import socket

from pydantic import SecretStr

from streamserve.config import Settings
from streamserve.config_env import RDKAFKA_PREFIX, env_name, is_secret_option, mask_url


def masked(settings: Settings) -> dict[str, str]:
    """Every setting as its variable and effective value (defaults that depend on others
    resolved), secrets masked."""
    shown: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name.startswith("rdkafka_"):
            continue
        if name in ("redis_url", "schema_registry_url") and value is not None:
            url = value.get_secret_value() if isinstance(value, SecretStr) else value
            shown[env_name(name)] = mask_url(url)
        elif name == "worker_id" and value is None:
            shown[env_name(name)] = _worker_id_shown(settings)
        elif name == "commit_interval_ms":
            shown[env_name(name)] = f"{settings.commit_interval_s * 1000:g}"
        elif name == "transactional_id" and settings.exactly_once:
            shown[env_name(name)] = settings.transactional_id or (
                f"{settings.group_id}-{_worker_id_shown(settings)}"
            )
        else:
            shown[env_name(name)] = "" if value is None else str(value)
    for scope, options in (
        ("", settings.rdkafka_common),
        ("CONSUMER_", settings.rdkafka_consumer),
        ("PRODUCER_", settings.rdkafka_producer),
    ):
        for option, value in sorted(options.items()):
            var = RDKAFKA_PREFIX + scope + option.replace(".", "_").upper()
            shown[var] = "****" if is_secret_option(option) else value
    return shown


def _worker_id_shown(settings: Settings) -> str:
    """STREAMSERVE_WORKER_ID, or what a worker takes at start (runtime/identity.py)."""
    return settings.worker_id or f"{socket.gethostname()}-<slot>"
