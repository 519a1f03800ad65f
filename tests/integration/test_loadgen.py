"""The measuring tools against the real broker: the rate producer, the watcher, the pass-through."""

import threading

from streamserve.io import kafka as kafka_io
from streamserve.runtime.startup import build_worker
from streamserve_loadgen.load.passthrough import run_passthrough
from streamserve_loadgen.load.produce import produce_at_rate
from streamserve_loadgen.load.profile import RateProfile
from streamserve_loadgen.measure.latency import Watcher
from streamserve_loadgen.world import synthetic

from .conftest import Scenario, wait_for


def test_a_paced_load_through_the_pass_through_is_timed_and_fully_accounted(
    scenario: Scenario,
) -> None:
    settings = scenario.with_settings(exit_when_idle_s=0).settings
    copies = f"copies-{scenario.uid}"
    admin = kafka_io.make_admin(settings)
    kafka_io.ensure_topics(admin, [settings.input_topic, copies], settings.topic_partitions)
    stop = threading.Event()
    summaries = []
    copier = threading.Thread(
        target=lambda: summaries.append(run_passthrough(settings, copies, stop)), daemon=True
    )
    copier.start()
    watcher = Watcher(settings.kafka_bootstrap, copies, origin="record-timestamp")
    try:
        profile = RateProfile("burst", rate=500, peak=3000, seconds=2, burst_every_s=1, burst_s=0.2)
        events = synthetic.generate_events(profile.total, 100)
        offered = produce_at_rate(settings.kafka_bootstrap, settings.input_topic, profile, events)
        watcher.run(expected=profile.total, idle_s=15)
    finally:
        stop.set()
        copier.join(30)
        watcher.close()
    assert offered["sent"] == profile.total == 2 * 500 + 2 * 0.2 * 2500
    assert offered["seconds"] >= 1.9  # paced, not sent as fast as possible (a busy machine: later)
    result = watcher.result(offered["sent"])
    assert result["lost"] == 0 and result["predictions"] == profile.total
    assert sum(point["events_per_s"] for point in result["series"]) == profile.total
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"] < 30_000
    wait_for(lambda: summaries, 5, "the pass-through summary")
    assert summaries[0].events == profile.total


def test_a_second_run_against_the_same_deployment_counts_only_its_own_events(
    scenario: Scenario,
) -> None:
    scenario.load_features(100, skip_every=0)
    settings = scenario.with_settings(exit_when_idle_s=0).settings
    worker = build_worker(settings)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        for run in range(2):  # the second run's watcher also reads the first run's outputs
            watcher = Watcher(
                settings.kafka_bootstrap, settings.predictions_topic, settings.dead_letter_topic
            )
            profile = RateProfile("fixed", rate=1_000, seconds=1)
            events = synthetic.generate_events(
                profile.total, 100, seed=run, malformed_every=50, start_id=run * profile.total
            )
            offered = produce_at_rate(
                settings.kafka_bootstrap, settings.input_topic, profile, events
            )
            watcher.count_from(offered["first_offsets"])
            watcher.run(expected=profile.total, idle_s=15)
            result = watcher.result(offered["sent"])
            watcher.close()
            assert (result["lost"], result["duplicated"]) == (0, 0), run
            assert result["predictions"] + result["dead_letters"] == profile.total == 1_000
            assert result["dead_letters"] == 20
    finally:
        worker.stop()
        runner.join(60)
