"""Build ebench with client TLS flags, for the TLS overhead benchmark (issue 7).

../shared/bench's ebench dials plain gRPC only. This copies its main.go, adds etcdctl's three TLS flags
(--cacert, --cert, --key, read with etcd's own transport.TLSInfo as etcdctl does) and builds it the way
build-ebench.sh does (Debian's Go and etcd 3.4 clientv3, GOPATH mode). Every other line of the load
generator is unchanged, so runs with and without TLS differ only in the transport.

Usage: python bench/ebench_tls.py            # prints the binary's path (built once, then reused)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE = REPO_ROOT.parent / "shared" / "bench" / "ebench" / "main.go"
OUTPUT = Path(os.environ.get("EBENCH_TLS_BIN", Path.home() / ".cache" / "quorum-bench" / "ebench-tls"))

_EDITS: tuple[tuple[str, str], ...] = (
    ('\t"go.etcd.io/etcd/clientv3"\n', '\t"go.etcd.io/etcd/clientv3"\n\t"go.etcd.io/etcd/pkg/transport"\n'),
    ("\tuser         string\n", "\tuser         string\n\tcacert, cert, key string\n"),
    (
        '\tfs.StringVar(&c.user, "user", "", "username:password (optional)")\n',
        '\tfs.StringVar(&c.user, "user", "", "username:password (optional)")\n'
        '\tfs.StringVar(&c.cacert, "cacert", "", "verify servers with this CA bundle (TLS)")\n'
        '\tfs.StringVar(&c.cert, "cert", "", "client certificate (TLS)")\n'
        '\tfs.StringVar(&c.key, "key", "", "client key (TLS)")\n',
    ),
    (
        "\treturn clientv3.New(cfg)\n",
        "\tif c.cacert != \"\" || c.cert != \"\" {\n"
        "\t\tinfo := transport.TLSInfo{TrustedCAFile: c.cacert, CertFile: c.cert, KeyFile: c.key}\n"
        "\t\ttc, err := info.ClientConfig()\n"
        "\t\tif err != nil {\n\t\t\treturn nil, err\n\t\t}\n"
        "\t\tcfg.TLS = tc\n"
        "\t}\n"
        "\treturn clientv3.New(cfg)\n",
    ),
)


def patched_source(text: str) -> str:
    """main.go with the TLS flags; fails loudly if ebench changed under us."""
    for old, new in _EDITS:
        if text.count(old) != 1:
            raise RuntimeError(f"ebench's main.go changed: cannot find {old.strip()!r} exactly once")
        text = text.replace(old, new)
    return text


def build(output: Path = OUTPUT) -> Path:
    if output.exists() and output.stat().st_mtime > SOURCE.stat().st_mtime:
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        Path(work, "main.go").write_text(patched_source(SOURCE.read_text()))
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": "/usr/share/gocode", "GOFLAGS": ""}
        subprocess.run(["go", "build", "-o", str(output), "."], cwd=work, env=env, check=True)
    return output


if __name__ == "__main__":
    print(build())
    sys.exit(0)
