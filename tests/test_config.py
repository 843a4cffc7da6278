import pytest

from obskit._config import OPTIONS, markdown_table, resolve


def test_keyword_beats_env_beats_default():
    env = {"OBSKIT_LOG_LEVEL": "DEBUG", "OTEL_SERVICE_NAME": "from-env"}
    s = resolve({"log_level": "ERROR"}, env)
    assert s.log_level == "ERROR" and s.sources["log_level"] == "argument"
    assert s.service_name == "from-env" and s.sources["service_name"] == "env OTEL_SERVICE_NAME"
    assert s.log_format == "auto" and s.sources["log_format"] == "default"


def test_standard_otel_variables_are_honoured():
    env = {
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=res-name,team=mes,service.version=2.1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc,x-tenant=t1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_SDK_DISABLED": "true",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "redis, aio-pika",
    }
    s = resolve({}, env)
    assert s.service_name == "res-name"  # OTEL_SERVICE_NAME unset: resource attribute used
    assert s.service_version == "2.1"
    assert s.resource_attributes["team"] == "mes"
    assert s.otlp_protocol == "http/protobuf"
    assert s.otlp_headers == {"authorization": "Bearer abc", "x-tenant": "t1"}
    assert s.otlp_timeout == 2.5
    assert (s.traces_sampler, s.traces_sampler_arg) == ("parentbased_traceidratio", 0.1)
    assert s.sdk_disabled is True
    assert s.disabled_instrumentations == ("redis", "aio_pika")
    assert s.resolved_spans_file is None  # an endpoint is configured


@pytest.mark.parametrize(
    ("options", "env", "fragment"),
    [
        ({"otlp_protocol": "thrift"}, {}, "otlp_protocol"),
        ({}, {"OBSKIT_METRICS_PORT": "http"}, "OBSKIT_METRICS_PORT"),
        ({"metrics_port": 70000}, {}, "metrics_port"),
        ({"traces_sampler_arg": 1.5}, {}, "traces_sampler_arg"),
        ({"log_level": "LOUD"}, {}, "log_level"),
        ({"otlp_endpoint": "localhost:4317"}, {}, "otlp_endpoint"),
    ],
)
def test_bad_values_raise_naming_the_option(options, env, fragment):
    with pytest.raises(ValueError, match=fragment):
        resolve(options, env)


def test_unknown_option_is_a_type_error_listing_valid_ones():
    with pytest.raises(TypeError, match="metrics_port"):
        resolve({"metric_port": 1}, {})


def test_secrets_are_masked():
    s = resolve({}, {"OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cr3t"})
    assert "s3cr3t" not in repr(s.masked())


def test_docs_table_is_generated_from_the_options(repo_root):
    doc = (repo_root / "docs" / "configuration.md").read_text()
    assert markdown_table() in doc, "regenerate with: python -m obskit._config"
    assert len(OPTIONS) == len({o.name for o in OPTIONS}) == len({o.env for o in OPTIONS})


def test_journey_options_parse_and_name_the_option_when_wrong():
    s = resolve({"journey_url": "redis://127.0.0.1:6379/0", "journey_sweep_interval": "2s",
                 "journey_retention": "3d", "stage_deadlines": "published=1m/10m"},
                environ={})
    assert s.journey_sweep_interval == 2 and s.journey_retention == 3 * 86400
    assert s.stage_deadlines.for_stage("published", "b2c").lost == 600
    assert resolve({}, environ={"OBSKIT_JOURNEY_URL": "off"}).journey_url is None
    for opt, bad in (("journey_url", "http://redis:6379"), ("journey_sweep_interval", "soon"),
                     ("stage_deadlines", "published=5m/1m"), ("journey_max_orders", "0")):
        try:
            resolve({opt: bad}, environ={})
        except ValueError as exc:
            assert opt in str(exc)
        else:
            raise AssertionError(f"{opt}={bad!r} was accepted")
