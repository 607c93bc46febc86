"""`make proto` reproduces the committed protobuf code exactly, so the .proto files are its source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _protoc(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *args], cwd=REPO, check=True, capture_output=True)


@pytest.mark.parametrize("proto, generated", [
    ("agent/nri/proto/nri.proto", ("agent/nri/proto/nri_pb2.py", "agent/nri/proto/nri_pb2.pyi")),
    ("agent/nri/proto/ttrpc.proto", ("agent/nri/proto/ttrpc_pb2.py", "agent/nri/proto/ttrpc_pb2.pyi")),
])
def test_nri_messages_regenerate_identically(tmp_path: Path, proto: str, generated: tuple[str, ...]) -> None:
    _protoc("-I", ".", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", proto)
    for path in generated:
        assert (tmp_path / path).read_text() == (REPO / path).read_text(), f"{path} is stale: run `make proto`"


def test_cri_messages_regenerate_identically(tmp_path: Path) -> None:
    _protoc("-I", "agent/cri/proto", f"--python_out={tmp_path}", "agent/cri/proto/cri.proto")
    assert (tmp_path / "cri_pb2.py").read_text() == (REPO / "agent/cri/cri_pb2.py").read_text(), \
        "agent/cri/cri_pb2.py is stale: run `make proto`"
