"""docker-compose.yml cannot run here (no Docker engine), so keep it honest
statically: official images, and only settings and commands the code has."""

import re
from pathlib import Path

import yaml

from timeline.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
OFFICIAL = ("postgres:", "temporalio/auto-setup:", "temporalio/ui:", "apachepulsar/pulsar:")


def _timeline_services():
    return {n: s for n, s in COMPOSE["services"].items() if s.get("image") == "timeline:latest"}


def test_third_party_services_use_official_images():
    for name, svc in COMPOSE["services"].items():
        if name in _timeline_services():
            continue
        assert svc["image"].startswith(OFFICIAL), f"{name} uses {svc['image']}"


def test_timeline_settings_are_the_ones_the_code_reads():
    read = set()
    for module in ("settings.py", "access.py"):
        read |= set(re.findall(r'"(TIMELINE_[A-Z_]+)"', (ROOT / "timeline" / "runtime" / module).read_text()))
    for name, svc in _timeline_services().items():
        assert set(svc["environment"]) <= read, (name, set(svc["environment"]) - read)
        assert {"TIMELINE_TEMPORAL", "TIMELINE_PULSAR", "TIMELINE_STORE"} <= set(svc["environment"])


def test_timeline_service_commands_exist():
    parser = build_parser()
    for name, svc in _timeline_services().items():
        if "command" in svc:
            args = parser.parse_args(svc["command"])
            assert callable(args.handler), name


def test_dockerfile_entrypoint_is_the_cli():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["timeline"]' in text and "pip install" in text


def _expand(value: str) -> str:
    """A compose value with `${VAR:-default}` replaced by its default (as when VAR is unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_the_results_store_is_postgresql_reachable_over_the_network():
    """No Timeline service needs a shared volume: the store is the results-db service."""
    from timeline.store.sql import engine_url

    db = COMPOSE["services"]["results-db"]
    assert db["image"].startswith("postgres:")
    for name, svc in _timeline_services().items():
        url = engine_url(_expand(svc["environment"]["TIMELINE_STORE"]))
        assert (url.get_backend_name(), url.host, url.database) == ("postgresql", "results-db", "timeline"), name
        assert url.username == db["environment"]["POSTGRES_USER"], name
        assert "volumes" not in svc, f"{name} mounts a volume: it could not run on another host"
    assert "results-db" in COMPOSE["services"]["worker"]["depends_on"]


def test_workers_and_feeders_can_be_scaled():
    """`--scale worker=M --scale feeder=N`: no fixed names or published ports on them."""
    for name in ("worker", "feeder"):
        svc = COMPOSE["services"][name]
        assert "container_name" not in svc and "ports" not in svc, name
    args = build_parser().parse_args(COMPOSE["services"]["feeder"]["command"])
    # Failover: one active feeder per partition (Apache Pulsar spreads the partitions), so each
    # partition is fed in order; Shared or Key_Shared would interleave a partition over feeders.
    assert args.subscription_type == "failover", "scaled feeders must share the subscription safely"


def test_pulsar_creates_partitioned_topics():
    pulsar = COMPOSE["services"]["pulsar"]
    assert pulsar["environment"]["allowAutoTopicCreationType"] == "partitioned"
    assert int(_expand(str(pulsar["environment"]["defaultNumPartitions"]))) >= 2
    assert "apply-config-from-env.py conf/standalone.conf" in " ".join(pulsar["command"])


def test_the_published_api_requires_a_token():
    """The API listens on 0.0.0.0 (published as 8080): compose refuses to start without a token
    (`${TIMELINE_API_TOKEN:?...}`), and `timeline api` would refuse too."""
    from timeline.runtime.access import AuthSettings, check_listen_address

    api = COMPOSE["services"]["api"]
    assert api["environment"]["TIMELINE_API_TOKEN"].startswith("${TIMELINE_API_TOKEN:?")
    assert _expand(api["environment"]["TIMELINE_API_READ"]) in ("open", "token")
    args = build_parser().parse_args(api["command"])
    check_listen_address(args.host, AuthSettings(token="from-compose"))  # accepted with the token
    import pytest

    from timeline.dsl.errors import UsageError

    with pytest.raises(UsageError):
        check_listen_address(args.host, AuthSettings())  # and refused without
    for name, svc in _timeline_services().items():
        if name != "api":
            assert "TIMELINE_API_TOKEN" not in svc["environment"], f"{name} does not need the API token"
