"""Every artefact in deploy/ is checked where it can be here: unit files pass `systemd-analyze verify`,
the settings in their EnvironmentFiles, the compose file and the Kubernetes manifests go through the
node's, the gateway's and the proxy's real flag parsers, the manifests validate against a schema, and
each metric the alert rules and the dashboard use is exported by a running 3-member cluster."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cluster.server.config import parse_config
from cluster.testing.ports import free_port
from cluster.testing.procs import REPO_ROOT, NodeProcess, etcdctl
from gateway.config import parse_gateway_args
from grpcproxy.config import parse_proxy_args
from tests.conftest import NodeFactory
from tests.integration.kubernetes_schema import SCHEMAS

DEPLOY = REPO_ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def env_file(path: Path) -> dict[str, str]:
    """An EnvironmentFile's assignments (comments and blank lines skipped; no quoting is used)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def exec_start(unit: Path, environ: dict[str, str]) -> list[str]:
    """ExecStart's words after systemd's expansion: ${VAR} stays one word, $VAR splits on spaces."""
    line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
    words: list[str] = []
    for word in line.removeprefix("ExecStart=").split():
        if re.fullmatch(r"\$[A-Z_]+", word):
            words += environ[word[1:]].split()
        else:
            words.append(re.sub(r"\$\{([A-Z_]+)\}", lambda m: environ[m.group(1)], word))
    return words


def unit_environment(unit: Path) -> dict[str, str]:
    """The unit's Environment= defaults overridden by the example EnvironmentFile shipped beside it."""
    defaults = dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in unit.read_text().splitlines()
        if line.startswith("Environment=")
    )
    return {**defaults, **env_file(unit.with_suffix(".env"))}


# ---- systemd ----


def test_there_are_units_for_a_member_the_gateway_and_the_proxy() -> None:
    assert [u.name for u in UNITS] == [
        "quorum-gateway.service",
        "quorum-grpc-proxy.service",
        "quorum.service",
    ]
    for unit in UNITS:
        assert unit.with_suffix(".env").is_file()
        assert f"EnvironmentFile=-/etc/default/{unit.stem}" in unit.read_text()


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_files_pass_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists that ExecStart's binary exists: point it at a stand-in, the rest is checked as is.
    stand_in = tmp_path / "quorum"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/usr/local/bin/quorum", str(stand_in)))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_member_environment_file_is_read_by_the_node_as_etcd_variables() -> None:
    environ = unit_environment(DEPLOY / "systemd" / "quorum.service")
    argv = exec_start(DEPLOY / "systemd" / "quorum.service", environ)
    assert argv[0] == "/usr/local/bin/quorum"
    config = parse_config(argv[1:], {k: v for k, v in environ.items() if k.startswith("ETCD_")})
    assert config.name == "infra1"
    assert config.data_dir == "/var/lib/quorum/infra1"
    assert config.initial_cluster.startswith("infra1=http://10.0.0.1:2380,")
    assert [str(u) for u in config.listen_client_urls] == ["http://10.0.0.1:2379", "http://127.0.0.1:2379"]
    assert config.quota_backend_bytes == 2147483648 and config.heartbeat_interval == 100
    assert not config.warnings


def test_the_gateway_and_proxy_units_command_lines_parse() -> None:
    gateway = exec_start(
        DEPLOY / "systemd" / "quorum-gateway.service",
        unit_environment(DEPLOY / "systemd" / "quorum-gateway.service"),
    )
    assert gateway[1:3] == ["gateway", "start"]
    config = parse_gateway_args(gateway[3:])
    assert len(config.endpoints) == 3 and config.listen_port == 23790
    proxy = exec_start(
        DEPLOY / "systemd" / "quorum-grpc-proxy.service",
        unit_environment(DEPLOY / "systemd" / "quorum-grpc-proxy.service"),
    )
    assert proxy[1:3] == ["grpc-proxy", "start"]
    proxy_config = parse_proxy_args(proxy[3:])
    assert proxy_config.listen_port == 23791


def test_the_member_unit_is_type_notify_and_the_node_notifies_once_it_serves(tmp_path: Path) -> None:
    assert "Type=notify" in (DEPLOY / "systemd" / "quorum.service").read_text()
    client, peer = free_port(), free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(tmp_path / "notify"))
        manager.settimeout(60)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "QUORUM_"))}
        env.update(NOTIFY_SOCKET=str(tmp_path / "notify"), PYTHONPATH=str(REPO_ROOT))
        member = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cluster.server.main",
                "--data-dir",
                str(tmp_path / "data"),
                "--listen-client-urls",
                f"http://127.0.0.1:{client}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{client}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert manager.recv(64) == b"READY=1"
            assert etcdctl(f"127.0.0.1:{client}", "put", "k", "v").stdout == "OK\n"
        finally:
            member.terminate()
            member.wait(timeout=20)


# ---- container image and compose ----


def test_the_containerfile_copies_what_the_package_needs_and_runs_quorum() -> None:
    lines = [
        x for x in (DEPLOY / "container" / "Containerfile").read_text().splitlines() if x and x[0] != "#"
    ]
    assert lines[0].startswith("FROM ")
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO_ROOT / source).exists(), source
    assert 'ENTRYPOINT ["quorum"]' in lines
    scripts = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'quorum = "cluster.server.main:main"' in scripts


def test_compose_members_gateway_and_proxy_parse_and_agree() -> None:
    compose = yaml.safe_load((DEPLOY / "container" / "compose.yaml").read_text())
    services = compose["services"]
    members = [name for name in services if name.startswith("infra")]
    assert members == ["infra1", "infra2", "infra3"]
    for name in members:
        service = services[name]
        config = parse_config(service["command"], service["environment"])
        assert config.name == name == service["hostname"]
        assert [str(u) for u in config.initial_advertise_peer_urls] == [f"http://{name}:2380"]
        cluster = dict(pair.split("=") for pair in config.initial_cluster.split(","))
        assert cluster == {m: f"http://{m}:2380" for m in members}
        assert service["volumes"] == [f"{name}:/var/lib/quorum"] and name in compose["volumes"]
    gateway = services["gateway"]["command"]
    assert gateway[:2] == ["gateway", "start"]
    endpoints = {f"{e.host}:{e.port}" for e in parse_gateway_args(gateway[2:]).endpoints}
    assert endpoints == {f"{m}:2379" for m in members}
    proxy = services["grpc-proxy"]["command"]
    assert proxy[:2] == ["grpc-proxy", "start"]
    assert parse_proxy_args(proxy[2:]).listen_port == 23790
    host_ports = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)) == 5


# ---- Kubernetes ----


def manifests() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((DEPLOY / "kubernetes" / "quorum.yaml").read_text()))


@pytest.mark.parametrize("index", range(6))
def test_each_kubernetes_object_validates_against_its_schema(index: int) -> None:
    objects = manifests()
    assert len(objects) == 6
    document = objects[index]
    jsonschema.validate(document, SCHEMAS[document["kind"]])


def test_the_schema_catches_a_misplaced_field() -> None:
    stateful_set = next(d for d in manifests() if d["kind"] == "StatefulSet")
    stateful_set["spec"]["template"]["spec"]["containers"][0]["envFrom"] = "oops"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(stateful_set, SCHEMAS["StatefulSet"])


def _pod_environment(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's env as Kubernetes resolves it for one pod ($(VAR) refers to earlier variables)."""
    resolved: dict[str, str] = {}
    for var in container["env"]:
        if "valueFrom" in var:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            resolved[var["name"]] = pod_name
        else:
            resolved[var["name"]] = re.sub(r"\$\(([A-Z_]+)\)", lambda m: resolved[m.group(1)], var["value"])
    return resolved


def test_the_statefulset_members_use_the_headless_services_dns_names() -> None:
    objects = manifests()
    stateful_set = next(d for d in objects if d["kind"] == "StatefulSet")
    headless = next(d for d in objects if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None")
    assert stateful_set["spec"]["serviceName"] == headless["metadata"]["name"] == "quorum"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    labels = stateful_set["spec"]["template"]["metadata"]["labels"]
    assert stateful_set["spec"]["selector"]["matchLabels"] == labels == headless["spec"]["selector"]
    container = stateful_set["spec"]["template"]["spec"]["containers"][0]
    pods = [f"quorum-{i}" for i in range(stateful_set["spec"]["replicas"])]
    for pod in pods:
        environ = _pod_environment(container, pod)
        config = parse_config([], {k: v for k, v in environ.items() if k.startswith("ETCD_")})
        assert config.name == pod
        assert [str(u) for u in config.initial_advertise_peer_urls] == [f"http://{pod}.quorum:2380"]
        cluster = dict(pair.split("=") for pair in config.initial_cluster.split(","))
        assert cluster == {p: f"http://{p}.quorum:2380" for p in pods}
    mount = container["volumeMounts"][0]
    assert mount["name"] == stateful_set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert environ["ETCD_DATA_DIR"].startswith(mount["mountPath"] + "/")


def test_the_proxy_deployment_points_at_the_members() -> None:
    objects = manifests()
    deployment = next(d for d in objects if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["grpc-proxy", "start"]
    config = parse_proxy_args(args[2:])
    assert config.listen_port == 23790
    assert [e for e in args if e.startswith("--endpoints=")] == [
        "--endpoints=quorum-0.quorum:2379,quorum-1.quorum:2379,quorum-2.quorum:2379"
    ]
    service = next(
        d for d in objects if d["metadata"]["name"] == "quorum-grpc-proxy" and d["kind"] == "Service"
    )
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]


# ---- Prometheus rules and Grafana dashboard ----

PROMQL_WORDS = {
    "bool",
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
}
BUILTIN_SERIES = {"up"}  # written by Prometheus itself for every scrape target


def promql_metrics(expr: str) -> set[str]:
    """The metric names an expression selects (matchers, grouping labels, ranges and strings removed)."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names - BUILTIN_SERIES


def test_promql_metric_extraction() -> None:
    expr = 'histogram_quantile(0.99, sum(rate(x_bucket{job=~"a(b)"}[5m])) by (le)) > on (i) up{} * y_total'
    assert promql_metrics(expr) == {"x_bucket", "y_total"}


@pytest.fixture(scope="module")
def exported_metrics(module_node_factory: NodeFactory) -> set[str]:
    """Sample names on a 3-member cluster's /metrics after some traffic (labelled series appear once used).
    --metrics=extensive, as on etcd, adds grpc_server_handling_seconds (QuorumGRPCRequestsSlow needs it)."""
    nodes: list[NodeProcess] = module_node_factory.cluster("quorum", 3, flags=["--metrics=extensive"])
    for i in range(5):
        assert etcdctl(nodes[i % 3].endpoint, "put", f"k{i}", "v").returncode == 0
    names: set[str] = set()
    for node in nodes:
        with urllib.request.urlopen(f"{node.client_url}/metrics", timeout=10) as response:
            page = response.read().decode()
        names |= {line.split("{")[0].split(" ")[0] for line in page.splitlines() if line and line[0] != "#"}
    return names


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((DEPLOY / "monitoring" / "quorum-alerts.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_cover_etcds_usual_alerts_with_complete_rules() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {
        "QuorumNoLeader",
        "QuorumHighNumberOfLeaderChanges",
        "QuorumInsufficientMembers",
        "QuorumHighFsyncDurations",
        "QuorumHighCommitDurations",
        "QuorumBackendQuotaLowSpace",
        "QuorumHighNumberOfFailedProposals",
    } <= names
    assert len(names) == len(rules)
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        assert {"summary", "description"} <= set(rule["annotations"])
        assert rule["expr"].count("(") == rule["expr"].count(")")


def test_every_metric_in_the_alert_rules_is_exported_by_quorum(exported_metrics: set[str]) -> None:
    used = set().union(*(promql_metrics(r["expr"]) for r in alert_rules()))
    assert "etcd_server_has_leader" in used and "etcd_disk_wal_fsync_duration_seconds_bucket" in used
    assert used - exported_metrics == set()


def test_the_grafana_dashboard_is_well_formed_and_uses_exported_metrics(exported_metrics: set[str]) -> None:
    dashboard = json.loads((DEPLOY / "monitoring" / "grafana-dashboard.json").read_text())
    assert dashboard["title"] == "Quorum" and dashboard["uid"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 8
    used: set[str] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        assert panel["targets"] and panel["type"] in ("stat", "timeseries")
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")")
            used |= promql_metrics(target["expr"])
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    assert used - exported_metrics == set()


# ---- local launcher ----


def test_local_cluster_help_lists_its_options() -> None:
    done = subprocess.run(
        [str(DEPLOY / "local-cluster"), "--help"],
        capture_output=True,
        text=True,
        timeout=10,
        env={**os.environ},
    )
    assert done.returncode == 0
    assert "--gateway" in done.stdout and "--grpc-proxy" in done.stdout
    bad = subprocess.run(
        [str(DEPLOY / "local-cluster"), "--nope"], capture_output=True, text=True, timeout=10
    )
    assert bad.returncode == 2 and "unknown argument --nope" in bad.stderr
