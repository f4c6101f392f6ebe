"""parse_config: etcd 3.4's defaults, flag syntax, environment rules, validation messages and exit codes."""

from __future__ import annotations

import dataclasses
import os

import pytest

from cluster.server.config import (
    FLAG_NAMES,
    ConfigError,
    InfoRequested,
    ServerConfig,
    parse_config,
)
from cluster.server.urls import parse_urls

SINGLE = ["--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379"]


def error_of(argv: list[str], environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(argv, environ or {})
    return info.value


# ---- defaults ---------------------------------------------------------------------------------------


def test_defaults_are_etcds() -> None:
    c = parse_config([], {})
    assert c.name == "default"
    assert c.data_dir == "default.quorum"
    assert [str(x) for x in c.listen_client_urls] == ["http://localhost:2379"]
    assert [str(x) for x in c.advertise_client_urls] == ["http://localhost:2379"]
    assert [str(x) for x in c.listen_peer_urls] == ["http://localhost:2380"]
    assert [str(x) for x in c.initial_advertise_peer_urls] == ["http://localhost:2380"]
    assert c.listen_metrics_urls == ()
    assert c.initial_cluster == "default=http://localhost:2380"
    assert c.initial_cluster_token == "etcd-cluster"
    assert c.initial_cluster_state == "new"
    assert (c.heartbeat_interval, c.election_timeout) == (100, 1000)
    assert c.snapshot_count == 100000
    assert (c.max_snapshots, c.max_wals) == (5, 5)
    assert c.quota_backend_bytes == 0 and c.quota_bytes == 2 * 1024**3
    assert c.max_request_bytes == 1572864
    assert c.max_txn_ops == 128
    assert c.max_concurrent_streams == 2**32 - 1
    assert (c.grpc_keepalive_min_time, c.grpc_keepalive_interval, c.grpc_keepalive_timeout) == (5, 7200, 20)
    assert (c.auto_compaction_mode, c.auto_compaction_retention) == ("periodic", "0")
    # zap (JSON lines) by default, unlike etcd 3.4's capnslog: see docs/compatibility.md.
    assert (c.logger, c.log_level, c.log_outputs) == ("zap", "info", ("default",))
    assert (c.auth_token, c.bcrypt_cost, c.auth_token_ttl) == ("simple", 10, 300)
    assert c.strict_reconfig_check and c.initial_election_tick_advance and c.enable_grpc_gateway
    assert not c.pre_vote and not c.enable_v2 and not c.force_new_cluster
    assert c.metrics == "basic"
    assert c.cors == ("*",) and c.host_whitelist == ("*",)
    assert c.experimental_warning_apply_duration == pytest.approx(0.1)
    assert c.compaction_batch_limit == 1000
    assert c.watch_progress_notify_interval == 600


def test_data_dir_default_follows_name() -> None:
    assert parse_config(["--name=n1"], {}).data_dir == "n1.quorum"


def test_initial_cluster_default_follows_name_and_advertised_peer_urls() -> None:
    c = parse_config(
        ["--name=n1", "--initial-advertise-peer-urls=http://127.0.0.1:3,http://127.0.0.1:2",
         "--listen-peer-urls=http://127.0.0.1:2"], {}
    )  # fmt: skip
    assert c.initial_cluster == "n1=http://127.0.0.1:2,n1=http://127.0.0.1:3"


def test_every_etcd_server_flag_has_a_field() -> None:
    expected = {
        "name", "data-dir", "wal-dir", "snapshot-count", "heartbeat-interval", "election-timeout",
        "initial-election-tick-advance", "listen-peer-urls", "listen-client-urls", "max-snapshots",
        "max-wals", "quota-backend-bytes", "backend-batch-interval", "backend-batch-limit", "max-txn-ops",
        "max-request-bytes", "max-concurrent-streams", "grpc-keepalive-min-time",
        "grpc-keepalive-interval", "grpc-keepalive-timeout", "initial-advertise-peer-urls",
        "initial-cluster", "initial-cluster-state", "initial-cluster-token", "advertise-client-urls",
        "discovery", "discovery-fallback", "discovery-proxy", "discovery-srv", "discovery-srv-name",
        "strict-reconfig-check", "pre-vote", "auto-compaction-retention", "auto-compaction-mode",
        "enable-v2", "cert-file", "key-file", "client-cert-auth", "client-crl-file",
        "client-cert-allowed-hostname", "trusted-ca-file", "auto-tls", "peer-cert-file", "peer-key-file",
        "peer-client-cert-auth", "peer-trusted-ca-file", "peer-cert-allowed-cn",
        "peer-cert-allowed-hostname", "peer-auto-tls", "peer-crl-file", "cipher-suites", "cors",
        "host-whitelist", "auth-token", "bcrypt-cost", "auth-token-ttl", "enable-pprof", "metrics",
        "listen-metrics-urls", "logger", "log-outputs", "log-output", "log-level", "debug",
        "log-package-levels", "proxy", "proxy-failure-wait", "proxy-refresh-interval",
        "proxy-dial-timeout", "proxy-write-timeout", "proxy-read-timeout",
        "experimental-initial-corrupt-check", "experimental-corrupt-check-time",
        "experimental-enable-v2v3", "experimental-backend-bbolt-freelist-type",
        "experimental-enable-lease-checkpoint", "experimental-enable-lease-checkpoint-persist",
        "experimental-compaction-batch-limit", "experimental-peer-skip-client-san-verification",
        "experimental-watch-progress-notify-interval", "experimental-warning-apply-duration",
        "force-new-cluster", "unsafe-no-fsync", "enable-grpc-gateway", "config-file",
    }  # fmt: skip
    assert expected <= set(FLAG_NAMES)


def test_config_is_frozen() -> None:
    c = parse_config([], {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.name = "x"  # type: ignore[misc]


# ---- derived values ---------------------------------------------------------------------------------


def test_ticks_are_derived_from_milliseconds() -> None:
    c = parse_config(["--heartbeat-interval=50", "--election-timeout=1234"], {})
    assert c.election_ticks == 1234 // 50
    assert c.heartbeat_ticks == 1
    assert c.tick_seconds == pytest.approx(0.05)
    assert parse_config([], {}).election_ticks == 10


def test_storage_paths_follow_etcds_layout() -> None:
    c = parse_config(["--data-dir=/d"], {})
    assert c.member_dir == os.path.join("/d", "member")
    assert c.wal_path == os.path.join("/d", "member", "wal")
    assert c.snap_dir == os.path.join("/d", "member", "snap")
    assert c.backend_path == os.path.join("/d", "member", "snap", "db")
    assert parse_config(["--data-dir=/d", "--wal-dir=/w"], {}).wal_path == "/w"


def test_initial_peers_are_parsed() -> None:
    c = parse_config(["--name=a", "--initial-cluster=a=http://localhost:2380,b=http://10.0.0.2:2380"], {})
    assert c.initial_peers == {"a": parse_urls("http://localhost:2380"), "b": parse_urls("http://10.0.0.2:2380")}


def test_debug_flag_forces_debug_level() -> None:
    assert parse_config(["--debug"], {}).effective_log_level == "debug"


@pytest.mark.parametrize(
    ("mode", "retention", "value"),
    [("periodic", "1", 3600.0), ("periodic", "30m", 1800.0), ("revision", "1000", 1000.0),
     ("periodic", "0", 0), ("revision", "1us", 1000.0)],
)
def test_auto_compaction_retention_value(mode: str, retention: str, value: float) -> None:
    c = parse_config([f"--auto-compaction-mode={mode}", f"--auto-compaction-retention={retention}"], {})
    assert c.auto_compaction_retention_value == value


def test_quota_negative_is_kept() -> None:
    assert parse_config(["--quota-backend-bytes=-1"], {}).quota_bytes == -1


# ---- flag syntax ------------------------------------------------------------------------------------


def test_go_flag_forms_are_all_accepted() -> None:
    argv = ["-name", "a", "--snapshot-count=7", "-max-txn-ops=9", "--pre-vote", "-data-dir", "/x"]
    c = parse_config(argv, {})
    assert (c.name, c.snapshot_count, c.max_txn_ops, c.pre_vote, c.data_dir) == ("a", 7, 9, True, "/x")


def test_bool_flag_takes_explicit_value_only_with_equals() -> None:
    assert parse_config(["--strict-reconfig-check=false"], {}).strict_reconfig_check is False
    assert error_of(["--pre-vote", "false"]).message == "'false' is not a valid flag"


def test_last_flag_wins() -> None:
    assert parse_config(["--name=a", "--name=b"], {}).name == "b"


def test_durations_and_lists() -> None:
    c = parse_config(
        ["--grpc-keepalive-min-time=1m", "--log-outputs=stdout,stderr,stdout", "--logger=zap",
         "--cipher-suites=A,B", "--experimental-warning-apply-duration=250ms"], {}
    )  # fmt: skip
    assert c.grpc_keepalive_min_time == 60
    assert c.log_outputs == ("stderr", "stdout")
    assert c.cipher_suites == ("A", "B")
    assert c.experimental_warning_apply_duration == pytest.approx(0.25)


def test_ignored_legacy_flags_take_any_value_and_warn() -> None:
    c = parse_config(["-v", "--peer-heartbeat-interval=3"], {})
    assert 'flag "-v" is no longer supported - ignoring.' in c.warnings
    assert 'flag "-peer-heartbeat-interval" is no longer supported - ignoring.' in c.warnings


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "flag provided but not defined: -bogus"),
        (["--name"], "flag needs an argument: -name"),
        (["---x"], "bad flag syntax: ---x"),
        (["--heartbeat-interval=abc"], 'invalid value "abc" for flag -heartbeat-interval: parse error'),
        (["--snapshot-count=-1"], 'invalid value "-1" for flag -snapshot-count: parse error'),
        (["--quota-backend-bytes=1.5"], 'invalid value "1.5" for flag -quota-backend-bytes: parse error'),
        (["--max-concurrent-streams=4294967296"],
         'invalid value "4294967296" for flag -max-concurrent-streams: '
         'strconv.ParseUint: parsing "4294967296": value out of range'),
        (["--pre-vote=maybe"], 'invalid boolean value "maybe" for -pre-vote: parse error'),
        (["--initial-cluster-state=bad"],
         'invalid value "bad" for flag -initial-cluster-state: invalid value'),
        (["--proxy=sideways"], 'invalid value "sideways" for flag -proxy: invalid value'),
        (["--listen-client-urls=foo"],
         'invalid value "foo" for flag -listen-client-urls: '
         "URL scheme must be http, https, unix, or unixs: foo"),
        (["--listen-client-urls=http://127.0.0.1"],
         'invalid value "http://127.0.0.1" for flag -listen-client-urls: '
         'URL address does not have the form "host:port": http://127.0.0.1'),
        (["--listen-client-urls=http://127.0.0.1:2379/path"],
         'invalid value "http://127.0.0.1:2379/path" for flag -listen-client-urls: '
         "URL must not contain a path: http://127.0.0.1:2379/path"),
        (["--grpc-keepalive-timeout=5"],
         'invalid value "5" for flag -grpc-keepalive-timeout: parse error'),
    ],
)  # fmt: skip
def test_flag_syntax_errors_exit_2_with_usage(argv: list[str], message: str) -> None:
    err = error_of(argv)
    assert err.exit_code == 2
    assert err.message == message
    assert str(err).startswith(message + "\n") and "Usage:" in str(err)


def test_positional_argument_is_rejected_with_exit_1() -> None:
    err = error_of(["extra"])
    assert (err.exit_code, err.message) == (1, "'extra' is not a valid flag")
    assert str(err) == "error verifying flags, 'extra' is not a valid flag. See 'quorum --help'."


def test_help_and_version_are_requests_not_configs() -> None:
    for argv in (["--help"], ["-h"], ["-help"]):
        with pytest.raises(InfoRequested) as info:
            parse_config(argv, {})
        assert "--heartbeat-interval '100'" in info.value.text
        assert "--data-dir '${name}.quorum'" in info.value.text
    with pytest.raises(InfoRequested) as info:
        parse_config(["--version"], {})
    lines = info.value.text.splitlines()
    assert lines[0].startswith("quorum Version: ")
    assert lines[1] == "etcd API Version: 3.4.23"


def test_version_false_is_not_a_request() -> None:
    assert parse_config(["--version=false"], {}).name == "default"


# ---- environment ------------------------------------------------------------------------------------


def test_etcd_env_vars_fill_flags() -> None:
    c = parse_config([], {"ETCD_NAME": "envname", "ETCD_HEARTBEAT_INTERVAL": "20", "ETCD_PRE_VOTE": "true"})
    assert (c.name, c.heartbeat_interval, c.pre_vote) == ("envname", 20, True)
    assert c.data_dir == "envname.quorum"
    assert "recognized and used environment variable ETCD_NAME=envname" in c.notices


def test_quorum_env_vars_are_an_alias_and_win_over_etcd() -> None:
    assert parse_config([], {"QUORUM_NAME": "q"}).name == "q"
    assert parse_config([], {"ETCD_NAME": "e", "QUORUM_NAME": "q"}).name == "q"


def test_empty_env_var_is_ignored() -> None:
    assert parse_config([], {"ETCD_NAME": ""}).name == "default"


def test_flag_and_env_for_the_same_setting_is_fatal() -> None:
    err = error_of(["--name=a"], {"ETCD_NAME": "b"})
    assert err.exit_code == 1
    assert err.message == (
        'conflicting environment variable "ETCD_NAME" is shadowed by corresponding command-line flag '
        "(either unset environment variable or disable flag)"
    )
    alias = error_of(["--name=a"], {"QUORUM_NAME": "b"})
    assert 'conflicting environment variable "QUORUM_NAME"' in alias.message


def test_flags_and_envs_for_different_settings_combine() -> None:
    c = parse_config(["--name=a"], {"ETCD_SNAPSHOT_COUNT": "5"})
    assert (c.name, c.snapshot_count) == ("a", 5)


def test_unknown_prefixed_env_var_only_warns() -> None:
    c = parse_config([], {"ETCD_BOGUS": "1", "QUORUM_NOPE": "2", "PATH": "/bin"})
    assert "unrecognized environment variable ETCD_BOGUS=1" in c.warnings
    assert "unrecognized environment variable QUORUM_NOPE=2" in c.warnings
    assert not any("PATH" in w for w in c.warnings)


def test_bad_env_value_is_a_verification_error() -> None:
    err = error_of([], {"ETCD_HEARTBEAT_INTERVAL": "abc"})
    assert (err.exit_code, err.message) == (1, 'invalid value "abc" for ETCD_HEARTBEAT_INTERVAL: parse error')


def test_env_election_timeout_is_validated() -> None:
    assert "should be at least as 5 times" in error_of([], {"ETCD_ELECTION_TIMEOUT": "10"}).message


# ---- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--heartbeat-interval=0"], "--heartbeat-interval must be >0 (set to 0ms)"),
        (["--election-timeout=0"], "--election-timeout must be >0 (set to 0ms)"),
        (["--election-timeout=400"],
         "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]"),
        (["--election-timeout=60000", "--heartbeat-interval=2000"],
         "--election-timeout[60000ms] is too long, and should be set less than 50000ms"),
        (["--listen-client-urls=http://1.2.3.4:2379"],
         "--advertise-client-urls is required when --listen-client-urls is set explicitly"),
        (["--listen-client-urls=http://example.com:2379", "--advertise-client-urls=http://a:1"],
         "expected IP in URL for binding (http://example.com:2379)"),
        (["--listen-peer-urls=http://example.com:2380"], "expected IP in URL for binding (http://example.com:2380)"),
        (["--listen-metrics-urls=http://example.com:2381"],
         "expected IP in URL for binding (http://example.com:2381)"),
        (["--advertise-client-urls=http://:2379"],
         '--advertise-client-urls "http://:2379" must be "host:port" (unexpected empty host (http://:2379))'),
        (["--initial-advertise-peer-urls=http://:2380", "--initial-cluster=default=http://:2380"],
         '--initial-advertise-peer-urls "http://:2380" must be "host:port" '
         "(unexpected empty host (http://:2380))"),
        (["--discovery=http://x", "--initial-cluster=a=http://localhost:2380"],
         'multiple discovery or bootstrap flags are set. Choose one of "initial-cluster", "discovery" '
         'or "discovery-srv"'),
        (["--auto-compaction-mode=xx"], 'unknown auto-compaction-mode "xx"'),
        (["--auto-compaction-retention=abc"],
         'error parsing CompactionRetention: time: invalid duration "abc"'),
        (["--logger=xx"], 'unknown logger option "xx"'),
        (["--log-level=xx", "--logger=zap"], 'unknown level "xx"'),
        (["--logger=zap", "--log-outputs=default,stdout"],
         'multi logoutput for "default" is not supported yet'),
        (["--logger=capnslog", "--log-outputs=stdout,stderr"],
         "--logger=capnslog supports only 1 value in '--log-outputs', got ['stderr', 'stdout']"),
        (["--logger=capnslog", "--log-outputs=/tmp/x.log"],
         'unknown log-output "/tmp/x.log" (only supports "default", "stderr", "stdout")'),
        (["--log-output=stdout", "--log-outputs=stderr"],
         "both '--log-output' and '--log-outputs' are set; only set '--log-outputs'"),
        (["--experimental-enable-lease-checkpoint-persist"],
         "setting experimental-enable-lease-checkpoint-persist requires "
         "experimental-enable-lease-checkpoint"),
        (["--name=x", "--initial-cluster=y=http://localhost:2380"],
         'couldn\'t find local name "x" in the initial cluster configuration'),
        (["--initial-cluster-state=existing", "--name=x", "--initial-cluster=y=http://localhost:2380"],
         'couldn\'t find local name "x" in the initial cluster configuration'),
        (["--initial-cluster=default=http://localhost:2380,b=http://localhost:2380"],
         "initial cluster b=http://localhost:2380,default=http://localhost:2380 has duplicate url"),
        (["--initial-cluster=default=http://127.0.0.1:2380"],
         "--initial-cluster has default=http://127.0.0.1:2380 but missing from "
         "--initial-advertise-peer-urls=http://localhost:2380"),
        (["--initial-cluster=default=http://localhost:2380",
          "--initial-advertise-peer-urls=http://localhost:2380,http://127.0.0.1:2380"],
         "--initial-advertise-peer-urls has http://127.0.0.1:2380 but missing from "
         "--initial-cluster=default=http://127.0.0.1:2380,default=http://localhost:2380"),
    ],
)  # fmt: skip
def test_verification_errors_exit_1_with_etcds_messages(argv: list[str], message: str) -> None:
    err = error_of(argv)
    assert err.exit_code == 1
    assert err.message == message
    assert str(err) == f"error verifying flags, {message}. See 'quorum --help'."


def test_existing_member_need_not_match_advertised_urls() -> None:
    c = parse_config(
        ["--initial-cluster-state=existing", "--initial-cluster=default=http://127.0.0.1:2380,b=http://h:2380"],
        {},
    )
    assert not c.is_new_cluster


def test_listen_client_without_advertise_is_fine_in_proxy_mode() -> None:
    c = parse_config(["--listen-client-urls=http://1.2.3.4:2379", "--proxy=on"], {})
    assert [str(x) for x in c.advertise_client_urls] == ["http://localhost:2379"]


def test_discovery_clears_default_initial_cluster() -> None:
    c = parse_config(["--discovery=https://discovery.example/abc"], {})
    assert c.initial_cluster == ""


def test_file_log_output_is_allowed_with_zap() -> None:
    c = parse_config(["--logger=zap", "--log-outputs=/tmp/a.log,stderr"], {})
    assert c.log_outputs == ("/tmp/a.log", "stderr")


def test_replace_keeps_config_comparable() -> None:
    c = parse_config(SINGLE, {})
    assert dataclasses.replace(c, name="default") == c
    assert isinstance(c, ServerConfig)


def test_zero_snapshot_count_means_the_default() -> None:
    c = parse_config(["--snapshot-count=0"], {})
    assert c.snapshot_count == 100000
    assert any("updating snapshot-count to default" in n for n in c.notices)


@pytest.mark.parametrize("cost", ["3", "32"])
def test_out_of_range_bcrypt_cost_falls_back_to_default_with_a_warning(cost: str) -> None:
    c = parse_config([f"--bcrypt-cost={cost}"], {})
    assert c.bcrypt_cost == 10
    assert any("invalid given cost" in w for w in c.warnings)


def test_large_request_and_quota_limits_only_warn() -> None:
    c = parse_config(["--max-request-bytes=20000000", "--quota-backend-bytes=10000000000"], {})
    assert (c.max_request_bytes, c.quota_bytes) == (20000000, 10000000000)
    assert any("exceeded recommended request limit" in w for w in c.warnings)
    assert any("quota exceeds the maximum value" in w for w in c.warnings)


def test_discovery_with_existing_state_is_rejected() -> None:
    err = error_of(["--discovery=https://d.example/x", "--initial-cluster-state=existing"])
    assert err.message == "discovery URL should not be set when joining existing initial cluster"


def test_empty_env_var_still_conflicts_with_its_flag() -> None:
    assert "conflicting environment variable" in error_of(["--name=a"], {"ETCD_NAME": ""}).message


def test_version_env_var_is_not_reported_as_unknown() -> None:
    assert not any("ETCD_VERSION" in w for w in parse_config([], {"ETCD_VERSION": "true"}).warnings)


def test_help_lists_every_flag_with_its_default() -> None:
    with pytest.raises(InfoRequested) as info:
        parse_config(["--help"], {})
    for flag in FLAG_NAMES:
        assert f"  --{flag} '" in info.value.text
