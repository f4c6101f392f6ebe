"""--config-file: etcd's YAML keys, and the rule that the file replaces every flag and variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.server.config import ConfigError, parse_config

FULL = """
name: infra1
data-dir: /var/lib/quorum/infra1
wal-dir: /wal
snapshot-count: 5000
heartbeat-interval: 50
election-timeout: 500
quota-backend-bytes: 8589934592
max-request-bytes: 2097152
max-txn-ops: 256
listen-peer-urls: http://10.0.0.1:2380
listen-client-urls: http://10.0.0.1:2379,http://127.0.0.1:2379
listen-metrics-urls: http://127.0.0.1:2381
initial-advertise-peer-urls: http://10.0.0.1:2380
advertise-client-urls: http://10.0.0.1:2379
initial-cluster: infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380
initial-cluster-token: tok
initial-cluster-state: existing
strict-reconfig-check: false
pre-vote: true
auto-compaction-mode: revision
auto-compaction-retention: "1000"
grpc-keepalive-min-time: 3000000000
experimental-watch-progress-notify-interval: 2s
logger: zap
log-level: warn
log-outputs: [stdout, /tmp/quorum.log]
cipher-suites: [TLS_A, TLS_B]
client-transport-security:
  cert-file: /c.crt
  key-file: /c.key
  client-cert-auth: true
  trusted-ca-file: /ca.crt
  auto-tls: false
peer-transport-security:
  cert-file: /p.crt
  auto-tls: true
proxy: "off"
discovery-fallback: exit
some-future-key: ignored
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "quorum.conf.yml"
    path.write_text(text)
    return str(path)


def test_every_kind_of_key_is_read(tmp_path: Path) -> None:
    c = parse_config([f"--config-file={write(tmp_path, FULL)}"], {})
    assert (c.name, c.data_dir, c.wal_path) == ("infra1", "/var/lib/quorum/infra1", "/wal")
    assert (c.snapshot_count, c.heartbeat_interval, c.election_timeout) == (5000, 50, 500)
    assert c.election_ticks == 10
    assert (c.quota_bytes, c.max_request_bytes, c.max_txn_ops) == (8 * 1024**3, 2097152, 256)
    assert [str(x) for x in c.listen_client_urls] == ["http://10.0.0.1:2379", "http://127.0.0.1:2379"]
    assert [str(x) for x in c.listen_metrics_urls] == ["http://127.0.0.1:2381"]
    assert set(c.initial_peers) == {"infra1", "infra2"}
    assert (c.initial_cluster_token, c.initial_cluster_state) == ("tok", "existing")
    assert (c.strict_reconfig_check, c.pre_vote) == (False, True)
    assert c.auto_compaction_retention_value == 1000
    assert c.grpc_keepalive_min_time == pytest.approx(3.0)
    assert c.experimental_watch_progress_notify_interval == pytest.approx(2.0)
    assert (c.logger, c.log_level, c.log_outputs) == ("zap", "warn", ("/tmp/quorum.log", "stdout"))
    assert c.cipher_suites == ("TLS_A", "TLS_B")
    assert (c.cert_file, c.key_file, c.trusted_ca_file) == ("/c.crt", "/c.key", "/ca.crt")
    assert c.client_cert_auth
    assert (c.peer_cert_file, c.peer_auto_tls) == ("/p.crt", True)
    assert c.discovery_fallback == "exit"
    assert c.config_file.endswith("quorum.conf.yml")


def test_file_replaces_flags_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "name: fromfile\n")
    argv = [f"--config-file={path}", "--name=fromflag", "--snapshot-count=3"]
    c = parse_config(argv, {"ETCD_MAX_TXN_OPS": "7"})
    assert (c.name, c.snapshot_count, c.max_txn_ops) == ("fromfile", 100000, 128)
    assert c.data_dir == "fromfile.quorum"
    assert c.initial_cluster == "fromfile=http://localhost:2380"
    assert any("other configuration command line flags and environment variables will be ignored" in n
               for n in c.notices)  # fmt: skip


def test_env_and_flag_conflict_is_not_checked_when_a_file_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "name: f\n")
    assert parse_config([f"--config-file={path}", "--name=a"], {"ETCD_NAME": "b"}).name == "f"


@pytest.mark.parametrize("variable", ["ETCD_CONFIG_FILE", "QUORUM_CONFIG_FILE"])
def test_config_file_can_come_from_the_environment(tmp_path: Path, variable: str) -> None:
    path = write(tmp_path, "name: viaenv\n")
    assert parse_config(["--name=ignored"], {variable: path}).name == "viaenv"


def test_flag_syntax_is_still_checked_with_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config([f"--config-file={write(tmp_path, '')}", "--bogus"], {})
    assert info.value.exit_code == 2


def test_listen_client_urls_alone_keeps_default_advertise_in_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "listen-client-urls: http://127.0.0.1:1\n")
    c = parse_config([f"--config-file={path}"], {})
    assert [str(x) for x in c.advertise_client_urls] == ["http://localhost:2379"]


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    c = parse_config([f"--config-file={write(tmp_path, '')}"], {})
    assert (c.name, c.heartbeat_interval) == ("default", 100)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [\n", "error converting YAML to JSON: "),
        ("heartbeat-interval: abc\n",
         "error unmarshaling JSON: json: cannot unmarshal string into Go struct field "
         "configYAML.heartbeat-interval of type uint"),
        ("pre-vote: maybe\n", "configYAML.pre-vote of type bool"),
        ("listen-client-urls: foo\n",
         "unexpected error setting up listen-client-urls: "
         "URL scheme must be http, https, unix, or unixs: foo"),
        ("election-timeout: 100\n",
         "--election-timeout[100ms] should be at least as 5 times as --heartbeat-interval[100ms]"),
        ("initial-cluster-state: maybe\n", 'unexpected clusterState "maybe"'),
        ("- a\n- b\n", "config file must be a YAML mapping"),
    ],
)
def test_bad_files_fail_verification(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config([f"--config-file={write(tmp_path, text)}"], {})
    assert info.value.exit_code == 1
    assert message in info.value.message


def test_missing_file_is_reported_like_etcd(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError) as info:
        parse_config([f"--config-file={missing}"], {})
    assert info.value.message == f"open {missing}: no such file or directory"
