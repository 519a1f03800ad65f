"""A synthetic fraud-style world: entity features, events, and a model trained on them.

Deterministic for a given seed, so tests can recompute every input a worker saw and compare its
scores with an offline ``Booster.predict``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import xgboost as xgb

from streamserve.core.model import EventDef, FeatureDef, Manifest, StoreDef, write_manifest

EVENT_FEATURES = [  # (feature name, field path in the event)
    ("amount", "amount"),
    ("hour_of_day", "hour_of_day"),
    ("merchant_risk", "merchant.risk"),
    ("is_foreign", "is_foreign"),
    ("device_age_days", "device_age_days"),
    ("distance_km", "distance_km"),
]
STORE_FEATURES = [
    "txn_count_1h",
    "txn_count_24h",
    "txn_count_7d",
    "avg_amount_7d",
    "avg_amount_30d",
    "max_amount_30d",
    "std_amount_30d",
    "chargebacks_90d",
    "declines_24h",
    "account_age_days",
    "distinct_merchants_7d",
    "distinct_countries_30d",
    "night_txn_ratio_30d",
    "foreign_txn_ratio_30d",
    "avg_distance_km_30d",
    "new_device_ratio_30d",
    "velocity_score",
    "email_age_days",
    "phone_verified",
    "kyc_level",
    "credit_limit",
    "balance_ratio",
    "prior_fraud_flags",
    "days_since_last_txn",
]
FEATURE_NAMES = [name for name, _ in EVENT_FEATURES] + STORE_FEATURES
MALFORMED_KINDS = ("malformed_json", "missing_entity_id", "invalid_feature", "empty_value")


@dataclass(frozen=True)
class World:
    """The synthetic world a run sets up: its entities (Zipf-distributed keys, 2% without
    features), one event in ``malformed_every`` malformed (0: none), the demo model's trees."""

    entities: int = 10_000
    malformed_every: int = 100
    trees: int = 200


def entity_id(index: int) -> str:
    return f"u{index}"


def entity_features(n_entities: int, seed: int = 7) -> np.ndarray:
    """Store features of entities 0..n-1: float32 (n, len(STORE_FEATURES))."""
    rng = np.random.default_rng(seed)
    n = n_entities
    counts = rng.poisson([1.0, 6.0, 30.0], size=(n, 3))
    amounts = rng.lognormal(3.5, 0.8, size=(n, 4)) * [1.0, 1.0, 3.0, 0.5]
    risk = rng.poisson([0.05, 0.3], size=(n, 2))
    tenure = rng.gamma(2.0, 300.0, size=(n, 1))
    spread = rng.poisson([5.0, 1.5], size=(n, 2))
    ratios = rng.beta(1.5, 8.0, size=(n, 2))
    distance = rng.lognormal(2.5, 1.0, size=(n, 1))
    behaviour = rng.beta(1.2, 6.0, size=(n, 2))
    identity = np.column_stack(
        [
            rng.gamma(2.0, 400.0, size=n),
            rng.integers(0, 2, size=n),
            rng.integers(0, 4, size=n),
            rng.choice([500.0, 1000.0, 5000.0, 20000.0], size=n),
            rng.beta(2.0, 3.0, size=n),
            rng.poisson(0.02, size=n),
            rng.exponential(3.0, size=n),
        ]
    )
    table = np.column_stack(
        [counts, amounts, risk, tenure, spread, ratios, distance, behaviour, identity]
    )
    return table.astype(np.float32)


def event_features(n_events: int, rng: np.random.Generator) -> np.ndarray:
    """Event features: float32 (n, len(EVENT_FEATURES))."""
    return np.column_stack(
        [
            np.round(rng.lognormal(3.5, 1.1, size=n_events), 2),
            rng.integers(0, 24, size=n_events),
            np.round(rng.beta(1.5, 6.0, size=n_events), 4),
            rng.random(n_events) < 0.1,
            rng.integers(0, 1000, size=n_events),
            np.round(rng.lognormal(2.0, 1.3, size=n_events), 1),
        ]
    ).astype(np.float32)


def fraud_probability(events: np.ndarray, store: np.ndarray) -> np.ndarray:
    """The ground truth the demo model learns: rises with amount, risk, velocity and foreignness."""
    amount, hour, merchant_risk, foreign, device_age, distance = events.T
    avg_amount = store[:, 4]
    logit = (
        -4.0
        + 1.2 * np.log1p(amount / (avg_amount + 1.0))
        + 3.0 * merchant_risk
        + 1.0 * foreign
        + 0.6 * (hour < 6)
        + 0.8 * (device_age < 7)
        + 0.3 * np.log1p(distance / (store[:, 14] + 1.0))
        + 0.4 * store[:, 0]
        + 1.2 * store[:, 7]
        + 1.5 * store[:, 22]
        + 0.5 * (store[:, 19] == 0)
    )
    return 1.0 / (1.0 + np.exp(-logit))


def demo_manifest(
    version: str = "1", layout: str = "vector", key_prefix: str = "feat:"
) -> Manifest:
    features = [FeatureDef(name, "event", path) for name, path in EVENT_FEATURES]
    features += [FeatureDef(name, "store") for name in STORE_FEATURES]
    return Manifest(
        name="fraud-demo",
        version=version,
        features=features,
        store=StoreDef(key_template=key_prefix + "{entity_id}", layout=layout),  # type: ignore[arg-type]
        event=EventDef(),
    )


def train_demo_model(
    out_dir: Path,
    trees: int = 300,
    rows: int = 20_000,
    seed: int = 7,
    version: str = "1",
    layout: str = "vector",
    key_prefix: str = "feat:",
    nthread: int = 2,
) -> Manifest:
    """Train the synthetic fraud model and write a bundle (model.ubj + manifest.json)."""
    rng = np.random.default_rng(seed + 1)
    store = entity_features(rows, seed=seed + 2)
    events = event_features(rows, rng)
    x = np.column_stack([events, store])
    x[rng.random(x.shape) < 0.02] = np.nan  # teach the trees a default direction for missing
    y = rng.random(rows) < fraud_probability(events, store)
    params = {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": nthread}
    data = xgb.DMatrix(x, label=y, feature_names=FEATURE_NAMES)
    booster = xgb.train(params, data, num_boost_round=trees)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = demo_manifest(version=version, layout=layout, key_prefix=key_prefix)
    booster.save_model(str(out_dir / manifest.model_file))
    write_manifest(out_dir, manifest)
    return manifest


def event_dict(event_id: int, entity: str, features: np.ndarray) -> dict[str, Any]:
    """One event as its producer would write it."""
    amount, hour, merchant_risk, foreign, device_age, distance = features.tolist()
    return {
        "event_id": f"ev-{event_id}",
        "entity_id": entity,
        "amount": amount,
        "hour_of_day": int(hour),
        "merchant": {"risk": merchant_risk, "mcc": "5411"},
        "is_foreign": int(foreign),
        "device_age_days": int(device_age),
        "distance_km": distance,
    }


def malformed_event(kind: str, event_id: int) -> bytes:
    """An event a worker must dead-letter with error class ``kind``."""
    if kind == "malformed_json":
        return b'{"event_id": "ev-%d", "entity_id": ' % event_id
    if kind == "missing_entity_id":
        return b'{"event_id": "ev-%d", "amount": 12.5}' % event_id
    if kind == "invalid_feature":
        return b'{"event_id": "ev-%d", "entity_id": "u1", "amount": "twelve"}' % event_id
    if kind == "empty_value":
        return b""
    raise ValueError(f"unknown malformed kind {kind!r}")


def zipf_entities(n: int, n_entities: int, rng: np.random.Generator, a: float = 1.2) -> np.ndarray:
    """Entity indices with a Zipf-like skew (a few hot entities), within 0..n_entities-1."""
    ranks = rng.zipf(a, size=n) - 1
    return (ranks % n_entities).astype(np.int64)


def generate_events(
    n: int, n_entities: int, seed: int = 11, malformed_every: int = 0, start_id: int = 0
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of ``n`` events; every ``malformed_every``-th one is malformed."""
    rng = np.random.default_rng(seed)
    entities = zipf_entities(n, n_entities, rng)
    features = event_features(n, rng)
    encode = msgspec.json.encode
    for i in range(n):
        event_id = start_id + i
        entity = entity_id(int(entities[i]))
        if malformed_every and i % malformed_every == malformed_every - 1:
            kind = MALFORMED_KINDS[(i // malformed_every) % len(MALFORMED_KINDS)]
            yield entity.encode(), malformed_event(kind, event_id)
        else:
            yield entity.encode(), encode(event_dict(event_id, entity, features[i]))
