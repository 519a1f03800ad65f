"""`streamserve dead-letters`: counting what failed, and replaying it once the cause is fixed."""

from __future__ import annotations

import json
from collections import Counter

from streamserve.io.kafka import Cluster
from streamserve.tools.audit import header_map, read_topics
from streamserve.tools.dead_letters import HEADER_REPLAY_OF
from streamserve_loadgen.world import synthetic
from tests.integration.conftest import Scenario, inputs_of
from tests.integration.helpers import run

N_EVENTS, N_ENTITIES, MALFORMED_EVERY = 1_000, 100, 50


def dead_letters(scenario: Scenario, *args: str) -> dict:
    result = run("dead-letters", *args, "--json", env=scenario.env())
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_dead_letters_are_counted_by_class_and_replayed_once(scenario: Scenario) -> None:
    scenario.load_features(N_ENTITIES, skip_every=0)
    scenario.preload(N_EVENTS, N_ENTITIES, malformed_every=MALFORMED_EVERY)
    assert run("worker", env=scenario.env()).returncode == 0
    per_kind = N_EVENTS // MALFORMED_EVERY // len(synthetic.MALFORMED_KINDS)

    counted = dead_letters(scenario, "count")
    assert counted["selected"] == counted["read"] == N_EVENTS // MALFORMED_EVERY
    assert counted["by_class"] == dict.fromkeys(synthetic.MALFORMED_KINDS, per_kind)
    kind = synthetic.MALFORMED_KINDS[0]
    assert dead_letters(scenario, "count", "--class", kind)["by_class"] == {kind: per_kind}
    assert dead_letters(scenario, "count", "--since", "2999-01-01T00:00:00Z")["selected"] == 0
    refused = run("dead-letters", "count", "--class", "no_such_class", env=scenario.env())
    assert refused.returncode == 2 and "no_such_class" in refused.stderr

    target = f"replayed-{scenario.uid}"
    dry = dead_letters(scenario, "replay", "--to", target, "--class", kind)
    assert (dry["executed"], dry["replayed"], dry["selected"]) == (False, 0, per_kind)
    done = dead_letters(scenario, "replay", "--to", target, "--class", kind, "--execute")
    assert (done["executed"], done["replayed"]) == (True, per_kind)
    again = dead_letters(scenario, "replay", "--to", target, "--class", kind, "--execute")
    assert again["replayed"] == 0  # the same selection: nothing new

    replayed = read_topics(Cluster.of(scenario.settings), [target], per_kind, 20, 1)[target]
    assert len(replayed) == per_kind
    inputs = inputs_of(scenario, N_EVENTS).values()
    originals = {(m.key(), m.value(), m.timestamp()[1]) for m in inputs}
    sources: Counter[tuple[str, str]] = Counter()
    for message in replayed:
        topic, partition, offset = header_map(message)[HEADER_REPLAY_OF].rsplit(":", 2)
        assert topic == scenario.settings.dead_letter_topic
        sources[partition, offset] += 1
        # the original record: its key, value and own timestamp
        assert (message.key(), message.value(), message.timestamp()[1]) in originals
        assert not any(k.startswith("streamserve-error") for k in header_map(message))
    assert max(sources.values()) == 1
