"""URL lists, the initial-cluster map and Go-style scalars parse the way etcd's flags parse them."""

from __future__ import annotations

import pytest

from cluster.server import urls as u
from cluster.server.urls import URL


def test_url_list_is_split_on_commas_stripped_deduplicated_and_sorted() -> None:
    parsed = u.parse_urls(" http://b:2 ,http://a:1,http://b:2")
    assert [str(x) for x in parsed] == ["http://a:1", "http://b:2"]


def test_url_exposes_host_port_and_tls() -> None:
    url = u.parse_url("https://10.0.0.1:2379")
    assert (url.scheme, url.host, url.port, url.is_tls) == ("https", "10.0.0.1", 2379, True)


def test_ipv6_url_keeps_brackets_in_text_but_not_in_host() -> None:
    url = u.parse_url("http://[::1]:2380")
    assert str(url) == "http://[::1]:2380"
    assert url.host == "::1"
    assert url.port == 2380


def test_scheme_is_lower_cased_like_go() -> None:
    assert str(u.parse_url("HTTP://a:1")) == "http://a:1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo", "URL scheme must be http, https, unix, or unixs: foo"),
        ("ftp://a:1", "URL scheme must be http, https, unix, or unixs: ftp://a:1"),
        ("http://127.0.0.1", 'URL address does not have the form "host:port": http://127.0.0.1'),
        ("http://127.0.0.1:2379/path", "URL must not contain a path: http://127.0.0.1:2379/path"),
    ],
)
def test_bad_urls_fail_with_etcds_messages(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        u.parse_url(text)
    assert str(info.value) == message


def test_localhost_listen_url_binds_loopback_ipv4() -> None:
    assert u.parse_url("http://localhost:2379").bind_host() == "127.0.0.1"
    assert u.parse_url("http://0.0.0.0:2379").bind_host() == "0.0.0.0"


def test_bind_urls_must_be_ip_or_localhost() -> None:
    u.check_bind_urls([u.parse_url("http://localhost:1"), u.parse_url("http://[::]:1")])
    with pytest.raises(ValueError, match=r"expected IP in URL for binding \(http://example.com:2379\)"):
        u.check_bind_urls([u.parse_url("http://example.com:2379")])


def test_host_urls_must_have_a_host() -> None:
    with pytest.raises(ValueError, match=r"unexpected empty host \(http://:2379\)"):
        u.check_host_urls([u.parse_url("http://:2379")])


def test_initial_cluster_groups_urls_by_name() -> None:
    peers = u.parse_initial_cluster("a=http://h1:2380,b=http://h2:2380,a=http://h0:2380")
    assert peers == {
        "a": (URL("http", "h0:2380"), URL("http", "h1:2380")),
        "b": (URL("http", "h2:2380"),),
    }
    assert u.format_initial_cluster(peers) == "a=http://h0:2380,a=http://h1:2380,b=http://h2:2380"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("5s", 5.0), ("100ms", 0.1), ("1h30m", 5400.0), ("1.5s", 1.5), ("2h", 7200.0),
     ("-1s", -1.0), ("10us", 1e-5)],
)  # fmt: skip
def test_go_durations(text: str, seconds: float) -> None:
    assert u.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1x", "s", "1h-2m"])
def test_bad_go_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="time: "):
        u.parse_duration(text)


def test_go_integers_accept_prefixes_and_check_range() -> None:
    assert u.parse_int("0x10", 64, False) == 16
    assert u.parse_int("010", 64, False) == 8
    assert u.parse_int("1_000", 64, False) == 1000
    assert u.parse_int("-5", 64, True) == -5
    with pytest.raises(ValueError, match="parse error"):
        u.parse_int("-5", 64, False)
    with pytest.raises(ValueError, match="parse error"):
        u.parse_int("1.5", 64, True)
    with pytest.raises(ValueError, match="value out of range"):
        u.parse_int(str(1 << 32), 32, False)


def test_go_booleans() -> None:
    parsed = [u.parse_bool(x) for x in ("1", "t", "TRUE", "True", "0", "f", "false")]
    assert parsed == [True] * 4 + [False] * 3
    with pytest.raises(ValueError):
        u.parse_bool("yes")
