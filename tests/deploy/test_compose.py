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
    read = set(re.findall(r'"(TIMELINE_[A-Z]+)"', (ROOT / "timeline" / "runtime" / "settings.py").read_text()))
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
