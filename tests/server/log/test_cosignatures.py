"""Auditors' cosigner keys and cosignatures (c2sp tlog-cosignature): accepted only for a
published checkpoint, by a registered key, consistent with what that auditor cosigned before.
In-process on both databases; then the real `porchlight audit` CLI against a live server."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.log import checkpoints
from app.log.models import LogAuditor, LogCosignature
from app.permissions import Role
from porchlight.tlog.checkpoint import Checkpoint, cosign, sign_checkpoint, verified_cosignatures
from porchlight.tlog.note import (
    ALG_COSIGNATURE_V1,
    CosignatureSigner,
    Signature,
    generate_signer,
)
from tests.server.factories import Community, Person
from tests.server.live import live_server
from tests.server.log.helpers import (
    auditor_token,
    fill,
    fill_database,
    fork,
    porchlight,
    signer_for,
)


def _witness(name: str) -> CosignatureSigner:
    signer = generate_signer(name, ALG_COSIGNATURE_V1)
    assert isinstance(signer, CosignatureSigner)
    return signer


def _register(community: Community, auditor: Person, witness: CosignatureSigner) -> int:
    response = community.client.post(
        "/api/log/auditor-keys",
        json={"verifier_key": witness.verifier().vkey()},
        headers=community.auth(auditor),
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _submit(client: TestClient, checkpoint: str, line: str) -> tuple[int, str]:
    response = client.post(
        "/log/cosignatures", json={"checkpoint": checkpoint, "cosignature": line}
    )
    return response.status_code, response.text


def _grow_and_publish(community: Community, count: int) -> str:
    with community.session() as session:
        fill(session, count)
        checkpoints.publish_checkpoint(session)
    return str(community.client.get("/log/checkpoint").text)


def test_registering_cosigner_keys(community: Community) -> None:
    client = community.client
    auditor = community.person(Role.auditor)
    resident = community.person(Role.resident)
    witness = _witness("auditor.example/one")
    body = {"verifier_key": witness.verifier().vkey()}
    assert client.post("/api/log/auditor-keys", json=body).status_code == 401
    assert (
        client.post(
            "/api/log/auditor-keys", json=body, headers=community.auth(resident)
        ).status_code
        == 403
    )
    log_style = generate_signer("auditor.example/plain")  # type 0x01: not a cosigner key
    before = community.counts()
    for bad in (log_style.verifier().vkey(), "not a key", witness.verifier().vkey() + "x"):
        response = client.post(
            "/api/log/auditor-keys", json={"verifier_key": bad}, headers=community.auth(auditor)
        )
        assert response.status_code == 422, bad
    assert community.counts() == before
    key_id = _register(community, auditor, witness)
    again = client.post("/api/log/auditor-keys", json=body, headers=community.auth(auditor))
    assert again.status_code == 409
    listed = client.get("/api/log/auditor-keys", headers=community.auth(auditor)).json()
    assert [k["id"] for k in listed] == [key_id]
    entries = client.get(
        "/api/log/entries",
        params={"subject": f"auditor_key:{key_id}"},
        headers=community.auth(auditor),
    ).json()["entries"]
    assert [e["action"] for e in entries] == ["auditor_key:register"]


def test_cosignature_accept_and_reject(community: Community) -> None:
    client = community.client
    auditor = community.person(Role.auditor)
    witness = _witness("auditor.example/w1")
    key_id = _register(community, auditor, witness)
    first = _grow_and_publish(community, 10)

    # Accepted, and served with the checkpoint from then on.
    line = cosign(first, witness).line().rstrip("\n")
    status, text = _submit(client, first, line)
    assert status == 201, text
    served = client.get("/log/checkpoint").text
    assert line in served
    assert [v.name for v, _ in verified_cosignatures(served, [witness.verifier()])] == [
        witness.name
    ]
    assert client.get("/api/log/public").json()["cosigners"] == [witness.name]

    # Unknown witness.
    stranger = _witness("stranger.example/w")
    assert _submit(client, first, cosign(first, stranger).line().rstrip("\n"))[0] == 403
    # A registered name, but a different key (key ID mismatch) or a corrupted signature.
    impostor = CosignatureSigner(witness.name, _witness("x.example/y").seed)
    assert _submit(client, first, cosign(first, impostor).line().rstrip("\n"))[0] == 403
    good = cosign(first, witness)
    corrupt = Signature(
        good.name, good.key_id, good.signature[:-1] + bytes([good.signature[-1] ^ 1])
    )
    assert _submit(client, first, corrupt.line().rstrip("\n"))[0] == 403
    # A checkpoint signed with the log's own key but never published: unknown.
    signer = community.app.state.log_signer
    with community.session() as session:
        latest = checkpoints.latest(session)
        assert latest is not None
        fake = sign_checkpoint(Checkpoint(signer.origin, latest.size, b"\x07" * 32), signer.signer)
    assert _submit(client, fake, cosign(fake, witness).line().rstrip("\n"))[0] == 404
    # Malformed input.
    assert _submit(client, "hello", line)[0] == 422
    assert _submit(client, first, "— nonsense")[0] == 422

    # A later checkpoint is accepted (consistent); then the earlier one is stale.
    second = _grow_and_publish(community, 20)
    assert _submit(client, second, cosign(second, witness).line().rstrip("\n"))[0] == 201
    status, text = _submit(client, first, cosign(first, witness).line().rstrip("\n"))
    assert status == 409 and "stale" in text

    # A revoked key is refused.
    revoke = client.post(f"/api/log/auditor-keys/{key_id}/revoke", headers=community.auth(auditor))
    assert revoke.status_code == 200
    third = _grow_and_publish(community, 5)
    assert _submit(client, third, cosign(third, witness).line().rstrip("\n"))[0] == 403
    with community.session() as session:
        stored = session.scalars(select(LogCosignature)).all()
        assert len(stored) == 2


def test_cosignature_refused_for_a_checkpoint_inconsistent_with_the_last_cosigned(
    community: Community,
) -> None:
    client = community.client
    auditor = community.person(Role.auditor)
    witness = _witness("auditor.example/w2")
    _register(community, auditor, witness)
    first = _grow_and_publish(community, 300)
    assert _submit(client, first, cosign(first, witness).line().rstrip("\n"))[0] == 201
    # The operator rewrites history from entry 100 and re-signs with the log's own key.
    settings = community.app.state.settings
    fork(settings.database_url, community.app.state.log_signer, 100, 250)
    forked = client.get("/log/checkpoint").text
    assert forked != first
    status, text = _submit(client, forked, cosign(forked, witness).line().rstrip("\n"))
    assert status == 409 and "not consistent" in text, text
    with community.session() as session:
        # What the auditor vouched for is unchanged.
        row = session.scalars(select(LogAuditor)).one()
        assert row.last_size == int(first.split("\n")[1])


def test_cli_cosign_timeline_and_export_against_a_live_server(
    database_url: str, tmp_path: Path
) -> None:
    import httpx

    data_dir = tmp_path / "data"
    vkey = signer_for(data_dir, database_url).verifier_key
    token = auditor_token(database_url)
    fill_database(database_url, 1000)
    witness_file = tmp_path / "witness.key"
    made = porchlight("audit", "keygen", "--name", "auditor.example/cli", "-o", str(witness_file))
    assert made.returncode == 0, made.stderr
    witness_vkey = made.stdout.strip()
    state = tmp_path / "state.json"
    with live_server(database_url, data_dir) as url:
        registered = httpx.post(
            f"{url}/api/log/auditor-keys",
            json={"verifier_key": witness_vkey},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert registered.status_code == 201, registered.text
        cosigned = porchlight(
            "audit",
            "cosign",
            "--server",
            url,
            "--key",
            vkey,
            "--signer-key",
            str(witness_file),
            "--state",
            str(state),
            "--token",
            token,
        )
        assert cosigned.returncode == 0, cosigned.stderr
        verified = porchlight(
            "audit",
            "verify",
            "--server",
            url,
            "--key",
            vkey,
            "--state",
            str(state),
            "--witness",
            witness_vkey,
            "--token",
            token,
        )
        assert verified.returncode == 0, verified.stderr
        timeline = porchlight("audit", "timeline", "42", "--server", url, "--token", token)
        assert timeline.returncode == 0, timeline.stderr
        assert "request 42: 10 log entries" in timeline.stdout
        exported = tmp_path / "log.jsonl"
        export = porchlight(
            "audit",
            "export",
            "--server",
            url,
            "--format",
            "jsonl",
            "-o",
            str(exported),
            "--token",
            token,
        )
        assert export.returncode == 0, export.stderr
        lines = exported.read_text().splitlines()
        size = int(httpx.get(f"{url}/log/checkpoint").text.split("\n")[1])
        assert len(lines) >= size >= 1000
