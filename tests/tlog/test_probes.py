"""The 196 transparency-dev/merkle proof probes: the verifier errs exactly where wantErr is true."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from porchlight.tlog.merkle import ProofError, verify_consistency, verify_inclusion
from tests import testdata
from tests.testdata import require_testdata

PROBES = Path("tlog", "transparency-dev-merkle", "testdata")


def _probe_files() -> list[Path]:
    root = testdata.testdata_root() / PROBES
    return sorted(root.rglob("*.json")) if root.exists() else []


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _check(probe: dict[str, Any]) -> None:
    proof = [_b64(p) for p in probe.get("proof") or []]
    if "leafIdx" in probe:
        verify_inclusion(
            probe["leafIdx"], probe["treeSize"], _b64(probe["leafHash"]), proof, _b64(probe["root"])
        )
    else:
        verify_consistency(
            probe["size1"], probe["size2"], _b64(probe["root1"]), _b64(probe["root2"]), proof
        )


def test_all_196_probes_are_present() -> None:
    require_testdata(*PROBES.parts)
    assert len(_probe_files()) == 196


@pytest.mark.parametrize(
    "path", _probe_files(), ids=lambda p: str(p.relative_to(testdata.testdata_root() / PROBES))
)
def test_probe(path: Path) -> None:
    probe = json.loads(path.read_text())
    if probe["wantErr"]:
        with pytest.raises(ProofError):
            _check(probe)
    else:
        _check(probe)
