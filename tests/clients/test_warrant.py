"""The warrant commitment the log records (porchlight.warrant, docs/log-format.md)."""

from __future__ import annotations

import hashlib

import pytest

from porchlight.warrant import WarrantError, warrant_commitment

WARRANT = {
    "court": "Cour d'appel de Liège",
    "docket_number": "TS-2026-0042",
    "judge": "HHJ Example",
    "issued_on": "2026-11-01",
    "expires_on": "2026-12-01",
    "document_sha256": hashlib.sha256(b"warrant").hexdigest(),
}


def test_the_commitment_is_the_documented_bytes_hashed() -> None:
    # Spelled out as docs/log-format.md gives it, so a change of format cannot go unnoticed.
    document = (
        '{"court":"Cour d\'appel de Liège","docket_number":"TS-2026-0042",'
        f'"document_sha256":"{WARRANT["document_sha256"]}","expires_on":"2026-12-01",'
        '"issued_on":"2026-11-01","judge":"HHJ Example"}'
    )
    expected = hashlib.sha256(b"porchlight warrant v1\n" + document.encode("utf-8")).hexdigest()
    assert warrant_commitment(WARRANT) == expected
    assert warrant_commitment(dict(reversed(list(WARRANT.items())))) == expected


@pytest.mark.parametrize("field", sorted(WARRANT))
def test_every_field_changes_the_commitment(field: str) -> None:
    assert warrant_commitment({**WARRANT, field: WARRANT[field] + "x"}) != warrant_commitment(
        WARRANT
    )


@pytest.mark.parametrize(
    ("warrant", "message"),
    [
        ({k: v for k, v in WARRANT.items() if k != "judge"}, "missing ['judge']"),
        ({**WARRANT, "offence": "burglary"}, "unexpected ['offence']"),
        ({**WARRANT, "issued_on": 20261101}, "issued_on must be a string"),
    ],
)
def test_warrants_it_cannot_commit_to_are_refused(warrant: dict[str, object], message: str) -> None:
    with pytest.raises(WarrantError, match=message.replace("[", r"\[").replace("]", r"\]")):
        warrant_commitment(warrant)
