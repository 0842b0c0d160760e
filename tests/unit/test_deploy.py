"""deploy/: the alert rules pass promtool, and every metric the rules and the dashboard read
is one the service exports (a renamed metric would silently blind an alert)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from telephony.metrics import Metrics

DEPLOY = Path(__file__).parents[2] / "deploy"
# Not ours: Prometheus' own and the blackbox exporter's.
FOREIGN = {"up", "probe_success"}
FUNCTIONS = {
    "min", "max", "sum", "by", "on", "rate", "delta", "predict_linear", "histogram_quantile",
    "and", "or", "le", "instance", "store", "op", "status", "job",
}  # fmt: skip


def exported() -> set[str]:
    registry = CollectorRegistry()
    Metrics.create(registry)
    text = generate_latest(registry).decode()
    names = set(re.findall(r"^# TYPE (\w+) ", text, re.M))
    # Families collectors add at scrape time (telephony.web.api.ops.ObjectStoreCollector and
    # BackupCollector).
    names |= {"object_store_requests", "object_store_errors", "object_store_request_seconds"}
    names |= {"backup_last_success_age_seconds"}
    full = set()
    for name in names:
        full |= {name, f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return full


def metrics_in(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', "", re.sub(r"\{[^}]*\}", "", expr))
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    words = set(re.findall(r"[a-z_][a-z0-9_]*", without_ranges))
    return {w for w in words if "_" in w or w == "up"} - FUNCTIONS


def rule_exprs() -> list[str]:
    text = (DEPLOY / "alerts.yml").read_text()
    exprs = []
    for block in re.split(r"\n\s+- alert: ", text)[1:]:
        found = re.search(r"expr: (>-\n((?:\s{10,}.+\n)+)|(.+))", block)
        assert found, block[:80]
        exprs.append(" ".join((found.group(2) or found.group(3)).split()))
    return exprs


def test_the_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install prometheus (scripts/system-packages)")
    result = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "alerts.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_every_metric_the_rules_read_is_exported() -> None:
    ours = exported()
    read = set().union(*(metrics_in(e) for e in rule_exprs()))

    assert len(read) >= 8
    assert read - ours - FOREIGN == set()


def test_every_metric_the_dashboard_reads_is_exported() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    read = set().union(*(metrics_in(e) for e in exprs))

    assert dashboard["uid"] and len(dashboard["panels"]) >= 8
    assert read - exported() == set()


def test_the_compose_file_runs_three_nodes_on_the_object_store_behind_haproxy() -> None:
    """Not run here (no container runtime): its shape and settings are checked instead, so
    it cannot drift from what the service reads."""
    import yaml

    from telephony.settings import Settings

    compose = yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text())
    services = compose["services"]
    node = services["telephony"]
    env = {k: str(v) for k, v in node["environment"].items() if "${" not in str(v)}

    assert node["deploy"]["replicas"] == 3
    assert {"postgres", "minio", "bucket", "haproxy"} <= set(services)
    assert (
        "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
        in services["haproxy"]["volumes"]
    )
    assert "server-template node 3 telephony:8080" in (DEPLOY / "haproxy.cfg").read_text()
    settings = Settings.from_env(env)  # the values the service would be started with
    assert settings.blob_url is not None and settings.blob_url.startswith("s3://recordings/")
    haproxy_ip = services["haproxy"]["networks"]["default"]["ipv4_address"]
    assert [str(n) for n in settings.trusted_proxies] == [f"{haproxy_ip}/32"]
