"""Numbers and dates beyond what the databases or Python's datetime hold get a clear 4xx.

Both databases store ids, log indexes, tree sizes and cosignature timestamps as signed 64-bit
integers; SQLite cannot even bind a larger Python int (OverflowError, a 500 before these
checks). Dates near the ends of Python's range overflow in a time-zone conversion. Every row
below sends such a value, with the credentials of a role the route admits, and must get a
404 or 422 with a message, and change nothing, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from app.db import MAX_ROW_ID
from app.log import checkpoints
from app.permissions import Role
from porchlight.client import DEVICE_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from porchlight.tlog.checkpoint import Checkpoint, cosign, sign_checkpoint
from porchlight.tlog.note import ALG_COSIGNATURE_V1, CosignatureSigner, generate_signer
from porchlight.tlog.tiles import encode_index
from tests.server.factories import Community, Person
from tests.server.log.helpers import fill

# The first value past the signed 64-bit limit, the reviewer's 2**70, and the largest uint64.
OVERSIZED = (2**63, 2**70, 2**64 - 1)
# Row ids: also the first value past PostgreSQL's 32-bit INTEGER id columns, which SQLite
# would bind but PostgreSQL cannot compare with them (a 500 when the bound was 2**63 - 1).
ROW_IDS = (2**31, *OVERSIZED)
UINT64 = (2**63, 2**64 - 1)


@dataclass
class Scene:
    """People of every role, a registered cosigner key and a published checkpoint."""

    community: Community
    people: dict[Role, Person]
    witness: CosignatureSigner
    checkpoint: str

    def request_body(self, **changes: str) -> dict[str, Any]:
        """A request that would be accepted, with `changes` ("warrant.expires_on": ...)."""
        now = self.community.now()
        body: dict[str, Any] = {
            "warrant": {
                "court": "Testshire Magistrates' Court",
                "docket_number": "TS-2026-0042",
                "judge": "HHJ Example",
                "issued_on": (now.date() - timedelta(days=1)).isoformat(),
                "expires_on": (now.date() + timedelta(days=30)).isoformat(),
                "document_sha256": hashlib.sha256(b"warrant").hexdigest(),
            },
            "offence": "Burglary at 12 Example Road",
            "window_start": (now - timedelta(hours=3)).isoformat(),
            "window_end": (now - timedelta(hours=1)).isoformat(),
            "area": {"lat": 51.5, "lon": -0.12, "radius_m": 300},
        }
        for key, value in changes.items():
            outer, _, inner = key.partition(".")
            if inner:
                body[outer][inner] = value
            else:
                body[key] = value
        return body

    def cosign_size(self, size: int, witness: CosignatureSigner | None = None) -> dict[str, str]:
        """A log-signed checkpoint of `size` entries, cosigned by the registered key."""
        signer = self.community.app.state.log_signer
        text = sign_checkpoint(Checkpoint(signer.origin, size, b"\x07" * 32), signer.signer)
        line = cosign(text, witness or self.witness).line().rstrip()
        return {"checkpoint": text, "cosignature": line}

    def cosign_size_unregistered(self, size: int) -> dict[str, str]:
        """As `cosign_size`, by a key nobody registered (the size is refused first)."""
        stranger = generate_signer("stranger.example/witness", ALG_COSIGNATURE_V1)
        assert isinstance(stranger, CosignatureSigner)
        return self.cosign_size(size, stranger)

    def cosign_at(self, timestamp: int) -> dict[str, str]:
        """The published checkpoint, cosigned by the registered key at `timestamp`."""
        at = CosignatureSigner(self.witness.name, self.witness.seed, clock=lambda: timestamp)
        line = cosign(self.checkpoint, at).line().rstrip()
        return {"checkpoint": self.checkpoint, "cosignature": line}


@pytest.fixture
def scene(community: Community) -> Scene:
    people = {role: community.person(role) for role in Role}
    witness = generate_signer("auditor.example/witness", ALG_COSIGNATURE_V1)
    assert isinstance(witness, CosignatureSigner)
    registered = community.client.post(
        "/api/log/auditor-keys",
        json={"verifier_key": witness.verifier().vkey()},
        headers=community.auth(people[Role.auditor]),
    )
    assert registered.status_code == 201, registered.text
    with community.session() as session:
        fill(session, 3)
        checkpoints.publish_checkpoint(session)
    published = community.client.get("/log/checkpoint")
    assert published.status_code == 200, published.text
    return Scene(community, people, witness, published.text)


@dataclass(frozen=True)
class Probe:
    """`method path` sent once per value: `{}` in the path takes the value (as `encode`
    writes it), `body` builds the JSON body from it; `role` None means no credentials."""

    method: str
    path: str
    role: Role | None
    values: tuple[Any, ...] = OVERSIZED
    body: Callable[[Scene, Any], Any] | None = None
    encode: Callable[[Any], str] = str

    def __str__(self) -> str:
        who = self.role.value if self.role is not None else "anyone"
        what = f" {self.values[0]}" if len(self.values) == 1 else ""
        if self.body is not None and self.body.__name__ != "<lambda>":
            what = f" {self.body.__name__}"
        return f"{self.method} {self.path} as {who}{what}"


PROBES = [
    # Integer ids in paths.
    Probe("GET", "/api/requests/{}", Role.requester, ROW_IDS),
    Probe("GET", "/api/requests/{}", Role.auditor, ROW_IDS),
    Probe("POST", "/api/requests/{}/close", Role.requester, ROW_IDS),
    Probe("GET", "/api/requests/{}/shared", Role.requester, ROW_IDS),
    Probe("GET", "/api/requests/{}/shared/clip", Role.requester, ROW_IDS),
    Probe(
        "POST",
        "/api/requests/{}/review",
        Role.reviewer,
        ROW_IDS,
        body=lambda _, __: {"decision": "approve", "reason": "a valid warrant"},
    ),
    Probe("GET", "/api/agencies/{}", Role.admin, ROW_IDS),
    Probe("DELETE", "/api/tokens/{}", Role.resident, ROW_IDS),
    Probe("POST", "/api/people/{}/disable", Role.admin, ROW_IDS),
    Probe(
        "PUT",
        "/api/devices/{}/location",
        Role.resident,
        ROW_IDS,
        body=lambda _, __: {"latitude": 51.5, "longitude": -0.12},
    ),
    Probe("POST", "/api/devices/{}/revoke", Role.resident, ROW_IDS),
    Probe("POST", "/api/admin/devices/{}/revoke", Role.admin, ROW_IDS),
    Probe("POST", "/api/log/auditor-keys/{}/revoke", Role.auditor, ROW_IDS),
    # Integer ids in bodies.
    Probe(
        "POST",
        "/api/invites",
        Role.admin,
        ROW_IDS,
        body=lambda _, value: {"role": "requester", "agency_id": value},
    ),
    # Log indexes and sizes in query strings.
    Probe("GET", "/api/log/entries?start={}", Role.auditor),
    Probe("GET", "/log/proof/inclusion?index={}", None),
    Probe("GET", "/log/proof/inclusion?index=0&size={}", None),
    Probe("GET", "/log/proof/consistency?from={}", None),
    Probe("GET", "/log/proof/consistency?from=1&to={}", None),
    # Tiles (the fast path in front of the routes, then the routes): an index or a level
    # whose nodes lie beyond any index the database can hold.
    Probe("GET", "/log/tile/0/{}", None, encode=encode_index),
    Probe("GET", "/log/tile/0/{}.p/7", None, encode=encode_index),
    Probe("GET", "/log/tile/{}/000", None),
    Probe("GET", "/log/tile/entries/{}", Role.auditor, encode=encode_index),
    # Cosignatures (c2sp.org/tlog-cosignature): a tree size, and a timestamp, past 2**63 - 1
    # (a note cannot even carry a number past 2**64 - 1); the size is refused before the
    # key is looked up.
    Probe("POST", "/log/cosignatures", None, values=UINT64, body=Scene.cosign_size),
    Probe("POST", "/log/cosignatures", None, values=UINT64, body=Scene.cosign_at),
    Probe("POST", "/log/cosignatures", None, values=UINT64, body=Scene.cosign_size_unregistered),
    # Dates and times at the ends of Python's range (and typos of the year).
    *(
        Probe("POST", "/api/requests", Role.requester, values=(value,), body=body)
        for value, body in [
            ("9999-12-31", lambda s, v: s.request_body(**{"warrant.expires_on": v})),
            ("0001-01-01", lambda s, v: s.request_body(**{"warrant.issued_on": v})),
            ("0202-01-01", lambda s, v: s.request_body(**{"warrant.issued_on": v})),
            ("0001-01-01T00:30+01:00", lambda s, v: s.request_body(window_start=v)),
            ("9999-12-31T23:30-01:00", lambda s, v: s.request_body(window_end=v)),
        ]
    ),
]


@pytest.mark.parametrize("probe", PROBES, ids=str)
def test_oversized_values_are_refused_and_change_nothing(scene: Scene, probe: Probe) -> None:
    client = scene.community.client
    for value in probe.values:
        headers = scene.community.auth(scene.people[probe.role]) if probe.role is not None else {}
        path = probe.path.replace("{}", probe.encode(value))
        body = probe.body(scene, value) if probe.body is not None else None
        before = scene.community.counts()
        response = client.request(probe.method, path, json=body, headers=headers)
        assert response.status_code in (404, 422), (value, response.text)
        message = response.json()["message"]
        assert re.search(r"\w", message), (value, response.text)
        assert scene.community.counts() == before, value


def test_dates_out_of_range_name_the_field_and_the_range(scene: Scene) -> None:
    cases = {
        "warrant.expires_on": scene.request_body(**{"warrant.expires_on": "9999-12-31"}),
        "window_start": scene.request_body(window_start="0001-01-01T00:30+01:00"),
    }
    for field, body in cases.items():
        response = scene.community.client.post(
            "/api/requests", json=body, headers=scene.community.auth(scene.people[Role.requester])
        )
        assert response.status_code == 422, response.text
        assert f"{field}: must be in the years 2000 to 2100" in response.json()["message"]


def test_web_request_form_shows_the_date_range_beside_the_field(scene: Scene) -> None:
    """The requester's web form validates through the same schema: a 422 page, no 500."""
    community = scene.community
    requester = scene.people[Role.requester]
    csrf = community.login(requester)
    body = scene.request_body()
    form = {
        "court": body["warrant"]["court"],
        "docket_number": body["warrant"]["docket_number"],
        "judge": body["warrant"]["judge"],
        "issued_on": body["warrant"]["issued_on"],
        "expires_on": "9999-12-31",
        "document_sha256": body["warrant"]["document_sha256"],
        "offence": body["offence"],
        "window_start": "0001-01-01T00:30+01:00",
        "window_end": body["window_end"],
        "lat": "51.5",
        "lon": "-0.12",
        "radius_m": "300",
        "csrf_token": csrf,
    }
    before = community.counts()
    response = community.client.post("/requests/new", data=form, headers={"Accept": "text/html"})
    assert response.status_code == 422, response.text
    assert response.text.count("must be in the years 2000 to 2100") == 2
    assert community.counts() == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/device/self"),
        ("GET", "/api/device/asks"),
        ("PUT", "/api/device/asks/a1b2c3/clips/c1d2e3"),
    ],
)
def test_device_ids_past_the_largest_row_are_refused_as_unknown(
    scene: Scene, method: str, path: str
) -> None:
    """A device call naming an id no row can have is refused like any unknown device (401),
    before the database sees the number (a 500 on both databases before)."""
    client = scene.community.client
    for device_id in (str(MAX_ROW_ID + 1), str(2**63), str(2**70), "0"):
        headers = {
            "Authorization": "Device not-a-credential",
            DEVICE_HEADER: device_id,
            TIMESTAMP_HEADER: str(int(scene.community.now().timestamp())),
            NONCE_HEADER: "0" * 32,
            SIGNATURE_HEADER: "AAAA",
        }
        before = scene.community.counts()
        response = client.request(method, path, headers=headers, content=b"")
        assert response.status_code == 401, (device_id, response.text)
        assert response.json()["message"], device_id
        assert scene.community.counts() == before, device_id
