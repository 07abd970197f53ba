"""docker/ checked without a Docker engine: the compose file parses and points at files that
exist, every metric the dashboard and alert rules use is one the code exports, and promtool
accepts the rules and the scrape config."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streamer.metrics import StreamerMetrics

DOCKER = Path(__file__).resolve().parents[2] / "docker"
ROOT = DOCKER.parent


def exported_names() -> set[str]:
    """Every sample name the processes can expose."""
    names = set()
    for family in StreamerMetrics("test").registry.collect():
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        elif family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "info":
            names.add(f"{family.name}_info")
        else:
            names.add(family.name)
    return names


def used_names(text: str) -> set[str]:
    return set(re.findall(r"\bstreamer_[a-z_]+\b", text))


def test_compose_parses_and_references_existing_files():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "topics", "camera", "worker", "worker-gpu", "sink", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).exists(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), (name, source)
    assert "deploy" not in services["worker"] or "replicas" not in services["worker"]["deploy"], \
        "workers scale with --scale"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_copy_what_exists(dockerfile):
    text = (DOCKER / dockerfile).read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert "ENTRYPOINT [\"streamer\"]" in text


def test_dashboard_and_rules_use_only_exported_metrics():
    exported = exported_names()
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "streamer.json").read_text())
    expressions = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    rules = (DOCKER / "prometheus" / "alerts.yml").read_text()
    used = used_names(expressions) | used_names(rules)
    assert used, "the dashboard should chart streamer metrics"
    assert used <= exported, f"not exported by the code: {sorted(used - exported)}"
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("throughput", "latency", "lag", "errors by reason", "fwhm before / after"):
        assert topic in titles, topic


def test_rules_and_config_pass_promtool(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/bootstrap.sh installs Debian's prometheus"
    result = subprocess.run([promtool, "check", "rules", str(DOCKER / "prometheus" / "alerts.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout
    # The config names the rules by their in-container path; check it beside a copy.
    shutil.copy(DOCKER / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    config = (DOCKER / "prometheus" / "prometheus.yml").read_text().replace(
        "/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml"))
    (tmp_path / "prometheus.yml").write_text(config)
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_cover_what_operators_need():
    rules = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"StreamerWorkerDown", "StreamerLagGrowing", "StreamerErrorRate",
            "StreamerLatencyObjective", "StreamerPartitionStuck"} <= names


def test_alert_rules_fire_when_they_should(tmp_path):
    """promtool's rule unit tests (docker/prometheus/alerts_test.yml): a partition with
    records waiting and no commit for 20 minutes pages; a busy one that commits, a caught-up
    one and one just handed over do not."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/bootstrap.sh installs Debian's prometheus"
    result = subprocess.run([promtool, "test", "rules", "alerts_test.yml"],
                            cwd=DOCKER / "prometheus", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
