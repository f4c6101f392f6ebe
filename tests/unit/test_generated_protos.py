"""The committed modules in cluster/api/gen are exactly what scripts/gen_protos.py produces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_modules_are_up_to_date_with_the_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_proto_package_imports_as_cluster_api_gen() -> None:
    import importlib

    for proto in sorted((ROOT / "cluster" / "api" / "proto").rglob("*.proto")):
        package = proto.parent.name
        for suffix in ("_pb2", "_pb2_grpc"):
            importlib.import_module(f"cluster.api.gen.{package}.{proto.stem}{suffix}")
