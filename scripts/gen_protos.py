#!/usr/bin/env python3
"""Regenerate the Python modules of the wire contract from cluster/api/proto.

The generated code lives in cluster/api/gen and is committed, so running the node never needs
grpcio-tools. protoc writes absolute imports relative to the proto root ("from mvccpb import kv_pb2");
they are rewritten to package imports ("from cluster.api.gen.mvccpb import kv_pb2") so the
generated modules import without touching sys.path.

Usage: python scripts/gen_protos.py [--check]   (--check exits 1 when the committed files are stale)
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "cluster" / "api" / "proto"
GEN_ROOT = ROOT / "cluster" / "api" / "gen"
GEN_PACKAGE = "cluster.api.gen"


def _proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def _rewrite_imports(text: str, packages: set[str]) -> str:
    def repl(match: re.Match[str]) -> str:
        pkg = match.group(1)
        if pkg.split(".")[0] in packages:
            return f"from {GEN_PACKAGE}.{pkg} import"
        return match.group(0)

    return re.sub(r"^from ([\w.]+) import", repl, text, flags=re.MULTILINE)


def generate(out_dir: Path) -> None:
    """Run protoc over every proto file into out_dir and fix imports."""
    import grpc_tools
    from grpc_tools import protoc  # imported late: only needed for regeneration

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in _proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    packages = {p.name for p in PROTO_ROOT.iterdir() if p.is_dir()}
    for path in out_dir.rglob("*.py*"):
        path.write_text(_rewrite_imports(path.read_text(), packages))
    for directory in [out_dir, *[d for d in out_dir.rglob("*") if d.is_dir()]]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")


def _snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): p.read_text()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.suffix in {".py", ".pyi"}
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed modules are stale")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        fresh.mkdir()
        generate(fresh)
        if ns.check:
            current = _snapshot(GEN_ROOT) if GEN_ROOT.exists() else {}
            wanted = _snapshot(fresh)
            if current != wanted:
                changed = {k for k in wanted if current.get(k) != wanted[k]}
                stale = sorted(set(current) ^ set(wanted) | changed)
                print("generated modules are stale; run scripts/gen_protos.py:", ", ".join(stale))
                return 1
            return 0
        if GEN_ROOT.exists():
            shutil.rmtree(GEN_ROOT)
        shutil.copytree(fresh, GEN_ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
