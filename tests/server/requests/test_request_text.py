"""A requester's text reaches residents (web pages, and the Pi's terminal in `porchlight device
asks`), so it may hold letters of any script but no character that drives a terminal or
reorders what it shows: control characters (ESC, CR, tab, C1), bidi overrides and isolates,
zero-width and other format characters, line and paragraph separators. A refusal is a 422
naming the field (the web form: the error beside the field) and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.factories import Community
from tests.server.requests.helpers import World, make_world

TEXT_FIELDS = ["warrant.court", "warrant.judge", "warrant.docket_number", "offence"]
HIDDEN = {
    "escape": ("\x1b[2J", "001B"),
    "carriage return": ("\r", "000D"),
    "bidi override": ("\u202e", "202E"),
}


@pytest.fixture
def world(community: Community) -> World:
    return make_world(community)


def _post(world: World, **changes: Any) -> Any:
    return world.client.post(
        "/api/requests",
        json=world.request_body(**changes),
        headers=world.community.auth(world.agency.requester),
    )


def _value(world: World, field: str) -> str:
    body = world.request_body()
    outer, _, inner = field.partition(".")
    return str(body[outer][inner] if inner else body[outer])


def _refused(world: World, field: str, value: str, code: str) -> None:
    before = world.community.counts()
    response = _post(world, **{field: value})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_input"
    assert body["message"].startswith(f"{field}: "), body["message"]
    assert f"U+{code}" in body["message"]
    assert world.community.counts() == before  # no request, no log entry


@pytest.mark.parametrize("kind", sorted(HIDDEN))
@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_control_and_bidi_characters_are_refused(world: World, field: str, kind: str) -> None:
    hidden, code = HIDDEN[kind]
    _refused(world, field, f"{_value(world, field)}{hidden}Elm Street Watch", code)


@pytest.mark.parametrize(
    ("hidden", "code"),
    [
        ("\t", "0009"),
        ("\x00", "0000"),
        ("\x85", "0085"),  # C1: next line
        ("\x9b", "009B"),  # C1: the one-byte CSI
        ("\u200b", "200B"),  # zero-width space
        ("\u200f", "200F"),  # right-to-left mark
        ("\u2028", "2028"),  # line separator
        ("\u2029", "2029"),  # paragraph separator
        ("\u2066", "2066"),  # left-to-right isolate
        ("\u2069", "2069"),  # pop directional isolate
        ("\ufeff", "FEFF"),  # byte order mark
    ],
)
def test_other_hidden_characters_are_refused(world: World, hidden: str, code: str) -> None:
    _refused(world, "offence", f"Burglary{hidden} at 12 Example Road", code)


@pytest.mark.parametrize("field", ["warrant.court", "warrant.judge", "warrant.docket_number"])
def test_a_line_feed_only_in_the_offence(world: World, field: str) -> None:
    _refused(world, field, f"{_value(world, field)}\nyour neighbours have shared", "000A")
    created = _post(world, offence="Burglary at 12 Example Road\nrear door forced")
    assert created.status_code == 201, created.text
    assert created.json()["offence"] == "Burglary at 12 Example Road\nrear door forced"


def test_text_in_any_script_is_accepted(world: World) -> None:
    text = {
        "warrant.court": "Amtsgericht München – Abteilung für Strafsachen",
        "warrant.judge": "Richterin Åsa Müller-Łukasiewicz",
        "warrant.docket_number": "北京-2026/42 ТС",
        "offence": "Einbruch – Müller, 北京; سرقة; चोरी; \u00a0non-breaking",
    }
    created = _post(world, **text)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["offence"] == text["offence"]
    assert body["warrant"]["court"] == text["warrant.court"]
    assert body["warrant"]["judge"] == text["warrant.judge"]
    assert body["warrant"]["docket_number"] == text["warrant.docket_number"]


def _form(world: World, **changes: str) -> dict[str, str]:
    body = world.request_body()
    form = {
        **{name: str(body["warrant"][name]) for name in ("court", "docket_number", "judge")},
        **{name: str(body["warrant"][name]) for name in ("issued_on", "expires_on")},
        "document_sha256": body["warrant"]["document_sha256"],
        "offence": body["offence"],
        "window_start": body["window_start"],
        "window_end": body["window_end"],
        "lat": str(body["area"]["lat"]),
        "lon": str(body["area"]["lon"]),
        "radius_m": str(body["area"]["radius_m"]),
    }
    return form | changes


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("judge", "HHJ Example\x1b[2K"),
        ("court", "Testshire\u202e Court"),
        ("docket_number", "TS-1\rTS-2"),
        ("offence", "Burglary\r at 12 Example Road"),  # a lone CR, not a textarea's CR LF
    ],
)
def test_the_web_form_shows_the_refusal_beside_the_field(
    world: World, field: str, value: str
) -> None:
    csrf = world.community.login(world.agency.requester)
    before = world.community.counts()
    response = world.client.post(
        "/requests/new",
        data=_form(world, **{field: value}, csrf_token=csrf),
        headers={"Accept": "text/html"},
        follow_redirects=False,
    )
    assert response.status_code == 422, response.text
    assert f'id="e-{field}"' in response.text
    assert "must not contain control or formatting characters" in response.text
    assert world.community.counts() == before


def test_the_web_form_takes_a_textareas_line_breaks(world: World) -> None:
    csrf = world.community.login(world.agency.requester)
    response = world.client.post(
        "/requests/new",
        data=_form(
            world, offence="Burglary at 12 Example Road\r\nrear door forced", csrf_token=csrf
        ),
        headers={"Accept": "text/html"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    listed = world.client.get("/api/requests", headers=world.community.auth(world.agency.requester))
    assert [r["offence"] for r in listed.json()] == [
        "Burglary at 12 Example Road\nrear door forced"
    ]
