import re
from pathlib import Path

import pytest

from streamserve.config import load_settings, settings_env_names
from streamserve.config_shown import masked
from streamserve.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.startswith("STREAMSERVE_"):
            monkeypatch.delenv(var)


def test_defaults_are_valid() -> None:
    settings = load_settings()
    assert settings.max_batch_size == 1000
    assert settings.max_wait_ms == 5.0


def test_environment_variables_set_the_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSERVE_MAX_BATCH_SIZE", "250")
    monkeypatch.setenv("STREAMSERVE_CREATE_TOPICS", "false")
    settings = load_settings()
    assert (settings.max_batch_size, settings.create_topics) == (250, False)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("STREAMSERVE_MAX_BATCH_SIZE", "0", "greater than or equal to 1"),
        ("STREAMSERVE_MAX_WAIT_MS", "soon", "valid number"),
        ("STREAMSERVE_LOG_LEVEL", "LOUD", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("STREAMSERVE_INPUT_TOPIC", "", "at least 1 character"),
    ],
)
def test_an_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert var in str(info.value) and message in str(info.value)


def test_an_unknown_variable_is_refused_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSERVE_MAX_WAITMS", "5")
    with pytest.raises(
        ConfigError,
        match="unknown setting STREAMSERVE_MAX_WAITMS; did you mean STREAMSERVE_MAX_WAIT_MS",
    ):
        load_settings()


def test_librdkafka_options_pass_through_by_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSERVE_RDKAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMSERVE_RDKAFKA_CONSUMER_FETCH_WAIT_MAX_MS", "50")
    monkeypatch.setenv("STREAMSERVE_RDKAFKA_PRODUCER_COMPRESSION_TYPE", "lz4")
    settings = load_settings()
    assert settings.rdkafka_common == {"security.protocol": "SASL_SSL"}
    assert settings.rdkafka_consumer == {"fetch.wait.max.ms": "50"}
    assert settings.rdkafka_producer == {"compression.type": "lz4"}


def test_masked_dump_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSERVE_REDIS_URL", "redis://app:hunter2@cache:6379/1")
    monkeypatch.setenv("STREAMSERVE_RDKAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("STREAMSERVE_RDKAFKA_SASL_USERNAME", "svc")
    shown = masked(load_settings())
    assert shown["STREAMSERVE_REDIS_URL"] == "redis://app:****@cache:6379/1"
    assert shown["STREAMSERVE_RDKAFKA_SASL_PASSWORD"] == "****"
    assert shown["STREAMSERVE_RDKAFKA_SASL_USERNAME"] == "svc"
    assert "hunter2" not in repr(load_settings())


def test_readme_table_lists_exactly_the_settings() -> None:
    table = re.findall(r"^\| `(STREAMSERVE_[A-Z0-9_]+)[^`]*` \|", README.read_text(), re.M)
    documented = {v for v in table if not v.startswith("STREAMSERVE_RDKAFKA_")}
    assert documented == set(settings_env_names())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"input_format": "avro"},
            "STREAMSERVE_INPUT_FORMAT=avro needs STREAMSERVE_SCHEMA_REGISTRY_URL",
        ),
        (
            {"output_format": "json-schema"},
            "STREAMSERVE_OUTPUT_FORMAT=json-schema needs STREAMSERVE_SCHEMA_REGISTRY_URL",
        ),
        (
            {"input_format": "protobuf", "schema_registry_url": "http://r", "runtime": "faust"},
            "STREAMSERVE_RUNTIME=faust reads and writes JSON only",
        ),
    ],
)
def test_registry_formats_need_a_registry_and_the_confluent_runtime(
    changes: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**changes)


def test_the_registry_client_gets_confluent_kafkas_option_names() -> None:
    settings = load_settings(
        schema_registry_url="https://registry:8081",
        schema_registry_basic_auth_user_info="user:pw",
        schema_registry_ssl_ca_location="/etc/ca.pem",
    )
    assert settings.schema_registry_config() == {
        "url": "https://registry:8081",
        "basic.auth.credentials.source": "USER_INFO",
        "basic.auth.user.info": "user:pw",
        "ssl.ca.location": "/etc/ca.pem",
    }


def test_exactly_once_commits_every_100_ms_unless_told_and_needs_the_confluent_runtime() -> None:
    assert load_settings().commit_interval_s == 1.0
    assert load_settings(processing_guarantee="exactly-once").commit_interval_s == 0.1
    explicit = load_settings(processing_guarantee="exactly-once", commit_interval_ms=500)
    assert explicit.commit_interval_s == 0.5
    named = load_settings(processing_guarantee="exactly-once", group_id="g", worker_id="w-0")
    assert named.effective_transactional_id == "g-w-0"
    with pytest.raises(ConfigError, match="exactly-once needs STREAMSERVE_RUNTIME=confluent"):
        load_settings(processing_guarantee="exactly-once", runtime="faust")


def test_exactly_once_clients_commit_in_transactions_only() -> None:
    from streamserve.io.kafka import consumer_config, producer_config

    settings = load_settings(processing_guarantee="exactly-once", group_id="g", worker_id="w")
    consumer = consumer_config(settings)
    assert (consumer["enable.auto.commit"], consumer["isolation.level"]) == (
        False,
        "read_committed",
    )
    assert producer_config(settings, transactional=True)["transactional.id"] == "g-w"
    assert "transactional.id" not in producer_config(settings)  # the metrics producer's
    assert consumer_config(load_settings())["enable.auto.commit"] is True


def test_exactly_once_transactions_time_out_after_10_s_unless_told() -> None:
    from streamserve.io.kafka import producer_config

    settings = load_settings(processing_guarantee="exactly-once", worker_id="w")
    assert producer_config(settings, transactional=True)["transaction.timeout.ms"] == 10_000
    assert "transaction.timeout.ms" not in producer_config(load_settings(worker_id="w"))
    with pytest.raises(ConfigError, match="STREAMSERVE_COMMIT_INTERVAL_MS"):
        load_settings(processing_guarantee="exactly-once", commit_interval_ms=10_000)
    longer = load_settings(
        processing_guarantee="exactly-once",
        commit_interval_ms=10_000,
        rdkafka_producer={"transaction.timeout.ms": "60000"},
        worker_id="w",
    )
    assert producer_config(longer, transactional=True)["transaction.timeout.ms"] == "60000"


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (
            "STREAMSERVE_REDIS_URL",
            "http://cache:6379",
            "starts with redis://, rediss:// or unix://",
        ),
        ("STREAMSERVE_REDIS_URL", "cache:6379", "starts with redis://, rediss:// or unix://"),
        ("STREAMSERVE_KAFKA_BOOTSTRAP", "", "at least one host:port"),
        ("STREAMSERVE_KAFKA_BOOTSTRAP", "a:9092,,b:9092", "none empty"),
    ],
)
def test_addresses_a_client_cannot_use_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert f"{var}='{value}'" in str(info.value) and message in str(info.value)


def test_a_refused_redis_url_keeps_its_password_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSERVE_REDIS_URL", "http://app:hunter2@cache:6379")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "hunter2" not in str(info.value) and "app:****@cache" in str(info.value)


@pytest.mark.parametrize(
    "output", ["predictions_topic", "dead_letter_topic", "metrics_topic", "shadow_topic"]
)
def test_an_output_topic_that_is_the_input_topic_is_a_feedback_loop(
    output: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(input_topic="events", shadow_model_dir=tmp_path, **{output: "events"})
    var = "STREAMSERVE_" + output.upper()
    assert f"{var} and STREAMSERVE_INPUT_TOPIC are both 'events'" in str(info.value)


def test_the_shadow_topic_is_an_output_only_with_a_challenger() -> None:
    assert load_settings(input_topic="events", shadow_topic="events").shadow_topic == "events"


def test_the_dump_shows_what_applies_under_exactly_once() -> None:
    shown = masked(load_settings(processing_guarantee="exactly-once", group_id="g"))
    assert shown["STREAMSERVE_COMMIT_INTERVAL_MS"] == "100"
    assert re.fullmatch(r"g-.+-<slot>", shown["STREAMSERVE_TRANSACTIONAL_ID"])
    named = load_settings(processing_guarantee="exactly-once", group_id="g", worker_id="w-1")
    assert masked(named)["STREAMSERVE_TRANSACTIONAL_ID"] == "g-w-1"
    assert masked(load_settings())["STREAMSERVE_COMMIT_INTERVAL_MS"] == "1000"


@pytest.mark.parametrize(
    ("var", "value", "reason"),
    [
        ("STREAMSERVE_RDKAFKA_FETCH_MAX_BYTEZ", "1", 'No such configuration property: "fetch'),
        ("STREAMSERVE_RDKAFKA_PRODUCER_LINGER_MS", "soon", "Invalid value"),
        ("STREAMSERVE_RDKAFKA_CONSUMER_FETCH_WAIT_MAX_MS", "-3", "outside allowed range"),
        ("STREAMSERVE_RDKAFKA_SASL_PASSWORD", "hunter2", None),  # accepted
    ],
)
def test_a_librdkafka_option_it_rejects_is_named_before_any_client_connects(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, reason: str | None
) -> None:
    from streamserve.io.kafka import check_client_options

    monkeypatch.setenv(var, value)
    monkeypatch.setenv("STREAMSERVE_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    if reason is None:
        check_client_options(load_settings())
        return
    with pytest.raises(ConfigError) as info:
        check_client_options(load_settings())
    assert str(info.value).startswith(f"{var}='{value}': librdkafka rejects it")
    assert reason in str(info.value)


def test_static_membership_makes_each_worker_id_its_group_instance_id() -> None:
    from streamserve.io.kafka import consumer_config

    assert "group.instance.id" not in consumer_config(load_settings(worker_id="pod-0"))
    static = load_settings(static_membership=True, worker_id="pod-0")
    assert consumer_config(static)["group.instance.id"] == "pod-0"


def test_one_group_instance_id_for_several_processes_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamserve.runtime.processes import refuse_shared_member_id

    refuse_shared_member_id(load_settings(static_membership=True), 4)  # each its own: fine
    monkeypatch.setenv("STREAMSERVE_RDKAFKA_CONSUMER_GROUP_INSTANCE_ID", "pod-0")
    with pytest.raises(ConfigError, match="STREAMSERVE_STATIC_MEMBERSHIP=true"):
        refuse_shared_member_id(load_settings(), 4)
