"""Each role's main journey in Chromium against a live server, from sign-in to the outcome.

One community flows through the module in order: the resident locates a camera, the
requester files two requests, the reviewer approves both, the resident declines one while the
camera consents to the other (a real signed consent receipt and age file, through the device
API), the requester downloads and decrypts the shared clip, the auditor reads the timeline and
sees the checkpoint verified, and the public sees the report count it all. Every page visited
is axe-scanned; the final page of each journey is screenshotted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from app.log import reports
from app.permissions import Role
from porchlight.age import decryptor
from porchlight.tlog.checkpoint import cosign
from porchlight.tlog.note import ALG_COSIGNATURE_V1, CosignatureSigner, generate_signer
from tests.server.factories import EnrolledDevice, Person
from tests.server.requests.helpers import CENTRE, World, make_world
from tests.web.browser import Journey
from tests.web.conftest import Site


@dataclass
class Story:
    world: World
    resident: Person
    device: EnrolledDevice
    auditor: Person
    requests: list[int] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def story(site: Site) -> Iterator[Story]:
    world = make_world(site.community)
    resident = site.community.person(Role.resident)
    device = site.community.enrol_device(resident, name="front porch")
    yield Story(world, resident, device, site.community.person(Role.auditor))


def _minute(moment: Any) -> str:
    return str(moment.strftime("%Y-%m-%dT%H:%M"))


def test_resident_sets_the_camera_location(
    site: Site, story: Story, page: Page, tmp_path: Path
) -> None:
    journey = Journey(page, site.url, "resident-devices", tmp_path)
    journey.sign_in(story.resident.username, story.resident.password)
    expect(page.get_by_role("heading", name="front porch")).to_be_visible()
    expect(page.get_by_text("Not set: this camera is never asked")).to_be_visible()
    page.get_by_label("Latitude").fill("north")
    page.get_by_label("Longitude").fill(str(CENTRE[1]))
    page.get_by_role("button", name="Save location").click()
    expect(page.get_by_text("Latitude must be a number")).to_be_visible()
    journey.check()
    page.get_by_label("Latitude").fill(str(CENTRE[0]))
    page.get_by_role("button", name="Save location").click()
    expect(page.get_by_text("Location saved")).to_be_visible()
    expect(
        page.get_by_text(f"{CENTRE[0]:.3f}, {CENTRE[1]:.3f} (rounded to about 100 m)")
    ).to_be_visible()
    journey.check()
    page.get_by_role("button", name="Create an enrolment code").click()
    assert page.locator("#enrolment-code").inner_text().startswith("enr")
    journey.check()
    # A second, lost camera is revoked; the first stays active.
    site.community.enrol_device(story.resident, name="old shed cam")
    journey.goto("/resident/devices")
    page.get_by_role("button", name="Revoke old shed cam").click()
    expect(page.get_by_text("Device revoked")).to_be_visible()
    expect(page.get_by_role("region", name="old shed cam")).to_contain_text("Revoked")
    expect(page.get_by_role("region", name="front porch")).to_contain_text("Active")
    journey.check()
    journey.screenshot()


def test_requester_files_a_request(site: Site, story: Story, page: Page, tmp_path: Path) -> None:
    requester = story.world.agency.requester
    now = site.community.now()
    journey = Journey(page, site.url, "requester-file", tmp_path)
    journey.sign_in(requester.username, requester.password)
    expect(page.get_by_role("heading", name="My requests")).to_be_visible()
    page.get_by_role("link", name="File a request").first.click()
    journey.check()
    form = {
        "Issuing court": "Testshire Magistrates' Court",
        "Docket or case number": "TS-2026-0101",
        "Issuing judge": "HHJ Example",
        "Issued on": (now.date() - timedelta(days=1)).isoformat(),
        "Expires on": (now.date() + timedelta(days=20)).isoformat(),
        "SHA-256 of the warrant document": "not-a-hash",
        "Offence being investigated": "Theft of a bicycle from 3 Example Road",
        "From": _minute(now - timedelta(hours=3)),
        "To": _minute(now - timedelta(hours=1)),
        "Latitude of the centre": str(CENTRE[0]),
        "Longitude of the centre": str(CENTRE[1]),
        "Radius in metres": "5000",
    }
    for label, value in form.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="File request").click()
    # Each problem beside its own field: first the form's own checks...
    expect(page.locator("#e-document_sha256")).to_contain_text("64 hexadecimal digits")
    journey.check()
    page.get_by_label("SHA-256 of the warrant document").fill(hashlib.sha256(b"w1").hexdigest())
    page.get_by_role("button", name="File request").click()
    # ...then the community policy's, from the service.
    expect(page.locator("#e-radius_m")).to_contain_text("exceeds this community's maximum")
    expect(page.get_by_label("Offence being investigated")).to_have_value(
        form["Offence being investigated"]
    )
    journey.check()
    page.get_by_label("Radius in metres").fill("300")
    page.get_by_role("button", name="File request").click()
    expect(page.get_by_text("Request filed.")).to_be_visible()
    expect(page.locator("#request-state")).to_have_text("Waiting for a community reviewer")
    journey.check()
    story.requests.append(int(page.url.split("/requests/")[1].split("?")[0]))
    # The second request (the one the resident will share for) is filed through the API.
    story.requests.append(story.world.submit(offence="Car window smashed on Example Road")["id"])
    journey.goto("/requests")
    expect(page.get_by_role("link", name=f"#{story.requests[1]}")).to_be_visible()
    journey.screenshot()


def test_reviewer_approves(site: Site, story: Story, page: Page, tmp_path: Path) -> None:
    reviewer = story.world.reviewer
    journey = Journey(page, site.url, "reviewer", tmp_path)
    journey.sign_in(reviewer.username, reviewer.password)
    for request_id in story.requests:
        card = page.get_by_role("region", name=f"Request #{request_id}:")
        expect(card).to_contain_text("Testshire Magistrates' Court")
        expect(card).to_contain_text("HHJ Example")
        # A decision without a reason is refused beside the reason field.
        card.get_by_label("Approve: the warrant checks out").check()
        card.get_by_role("button", name=f"Record decision on request #{request_id}").click()
        card = page.get_by_role("region", name=f"Request #{request_id}:")
        expect(card.get_by_text("give a reason")).to_be_visible()
        journey.check()
        card.get_by_label("Approve: the warrant checks out").check()
        card.get_by_label(f"Reason for request #{request_id}").fill(
            "Warrant matches the court record (docket and judge confirmed by phone)."
        )
        card.get_by_role("button", name=f"Record decision on request #{request_id}").click()
        expect(page.get_by_text("Approved.")).to_be_visible()
        journey.check()
    expect(page.get_by_text("No requests are waiting for review.")).to_be_visible()
    journey.screenshot()
    asks = story.world.device_asks(story.device)
    assert sorted(a["request"]["id"] for a in asks) == sorted(story.requests)
    story.notes["asks"] = {a["request"]["id"]: a["ask_id"] for a in asks}


def test_resident_declines_one_and_the_camera_consents_to_the_other(
    site: Site, story: Story, page: Page, tmp_path: Path
) -> None:
    declined, shared = story.requests
    asks = story.notes["asks"]
    journey = Journey(page, site.url, "resident-asks", tmp_path)
    journey.sign_in(story.resident.username, story.resident.password)
    journey.goto("/resident/asks")
    card = page.get_by_role("region", name=f"Request #{declined}:")
    for text in (
        "Testshire Police",
        story.world.agency.requester.username,
        "TS-2026-0101",
        "HHJ Example",
        "Theft of a bicycle",
        "Within 300 m",
    ):
        expect(card).to_contain_text(text)
    expect(page.get_by_text("The requester never learns")).to_be_visible()
    card.get_by_role("button", name=f"Say no to request #{declined}").click()
    expect(page.get_by_text("You said no.")).to_be_visible()
    expect(page.get_by_role("region", name=f"Request #{declined}:")).to_have_count(0)
    journey.check()

    # The consent itself is made on the camera: a signed receipt, then the rewrapped clip.
    world = story.world
    clip = world.clip("clip-0001", start=site.community.now() - timedelta(hours=2))
    response = world.consent(story.device, asks[shared], shared, [clip.clip_id])
    assert response.status_code == 200, response.text
    response = world.upload(story.device, asks[shared], clip)
    assert response.status_code in (200, 201), response.text
    story.notes["clip"] = clip

    journey.goto("/resident/asks")
    card = page.get_by_role("region", name=f"Request #{shared}:")
    expect(card).to_contain_text("You shared 1 clip")
    expect(
        card.get_by_role("button", name=f"Withdraw consent for request #{shared}")
    ).to_be_visible()
    journey.goto("/resident/history")
    expect(page.get_by_role("region", name=f"Request #{declined}:")).to_contain_text("You said no")
    shared_card = page.get_by_role("region", name=f"Request #{shared}:")
    expect(shared_card).to_contain_text("You shared clips")
    expect(shared_card).to_contain_text("Clips you shared")
    journey.screenshot()


def test_requester_downloads_the_shared_clip(
    site: Site, story: Story, page: Page, tmp_path: Path
) -> None:
    declined, shared = story.requests
    requester = story.world.agency.requester
    journey = Journey(page, site.url, "requester-download", tmp_path)
    journey.sign_in(requester.username, requester.password)
    journey.goto(f"/requests/{declined}")
    expect(page.get_by_text("No clips have been shared.")).to_be_visible()
    journey.goto(f"/requests/{shared}")
    card = page.get_by_role("region", name="Resident A:")
    expect(card).to_contain_text("Verified")
    expect(card).to_contain_text(hashlib.sha256(story.notes["clip"].plaintext).hexdigest())
    body = page.content()
    # Nothing about who was asked, who declined, or which camera.
    for secret in (story.resident.username, "front porch", "declin", "said no", "asked"):
        assert secret not in body, secret
    with page.expect_download() as info:
        card.get_by_role("link", name="Download clip from Resident A").click()
    path = tmp_path / "clip.age"
    info.value.save_as(path)
    with path.open("rb") as sealed:
        plaintext = decryptor(sealed, [story.world.agency.identity]).read()
    assert plaintext == story.notes["clip"].plaintext
    journey.screenshot()
    # The download ended revocability: the resident can no longer withdraw.
    revoke = site.community.client.post(
        f"/api/asks/{story.notes['asks'][shared]}/revoke",
        headers=site.community.auth(story.resident),
    )
    assert revoke.status_code == 409


def test_resident_withdraws_a_consent_before_any_download(
    site: Site, story: Story, page: Page, tmp_path: Path
) -> None:
    world = story.world
    third = world.open_request(offence="Graffiti on the bus shelter")["id"]
    ask_id = next(
        a["ask_id"] for a in world.device_asks(story.device) if a["request"]["id"] == third
    )
    clip = world.clip("clip-0002", start=site.community.now() - timedelta(hours=2))
    assert world.consent(story.device, ask_id, third, [clip.clip_id]).status_code == 200
    assert world.upload(story.device, ask_id, clip).status_code in (200, 201)
    assert len(world.shared(third)) == 1
    journey = Journey(page, site.url, "resident-withdraw", tmp_path)
    journey.sign_in(story.resident.username, story.resident.password)
    journey.goto("/resident/asks")
    page.get_by_role("button", name=f"Withdraw consent for request #{third}").click()
    expect(page.get_by_text("Consent withdrawn")).to_be_visible()
    journey.check()
    assert world.shared(third) == []
    journey.goto("/resident/history")
    card = page.get_by_role("region", name=f"Request #{third}:")
    expect(card).to_contain_text("You withdrew your consent")
    expect(card).to_contain_text("deleted from the server")
    journey.screenshot()
    story.requests.append(third)


def test_auditor_reads_a_timeline_and_the_verified_checkpoint(
    site: Site, story: Story, page: Page, tmp_path: Path
) -> None:
    shared = story.requests[1]
    journey = Journey(page, site.url, "auditor", tmp_path)
    journey.goto("/audit/checkpoint")  # signed out: sent to the login page, then back
    assert "/login?next=" in page.url
    # Keyboard only: type, Tab to the password, Enter submits.
    page.get_by_label("User name").focus()
    page.keyboard.type(story.auditor.username)
    page.keyboard.press("Tab")
    page.keyboard.type(story.auditor.password)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Latest checkpoint")).to_be_visible()
    journey.check()
    journey.goto("/audit/requests")
    with page.expect_download() as export:
        page.get_by_role("link", name="Export all requests (CSV)").click()
    rows = Path(export.value.path()).read_text().splitlines()
    assert rows[0].startswith("id,state,agency_id") and len(rows) == 1 + len(story.requests)
    page.get_by_role("link", name=f"Request #{shared}", exact=True).click()
    journey.check()
    timeline = page.locator("#timeline")
    for action in (
        "request:submit",
        "request:approve",
        "request:open",
        "ask:consent",
        "clip:download",
    ):
        expect(timeline).to_contain_text(action)
    timeline.get_by_role("link").first.click()
    expect(page.get_by_role("heading", name="Inclusion proof")).to_be_visible()
    journey.check()
    # The auditor cosigns the latest checkpoint with their own witness key (c2sp
    # tlog-cosignature), as `porchlight audit cosign` does.
    client, auth = site.community.client, site.community.auth(story.auditor)
    witness = generate_signer("auditor.example/witness", ALG_COSIGNATURE_V1)
    assert isinstance(witness, CosignatureSigner)
    registered = client.post(
        "/api/log/auditor-keys", json={"verifier_key": witness.verifier().vkey()}, headers=auth
    )
    assert registered.status_code == 201, registered.text
    latest = client.get("/log/checkpoint").text
    line = cosign(latest, witness).line()
    accepted = client.post("/log/cosignatures", json={"checkpoint": latest, "cosignature": line})
    assert accepted.status_code == 201, accepted.text
    journey.goto("/audit/checkpoint")
    expect(page.locator("#checkpoint-status")).to_contain_text("Verified")
    expect(page.get_by_text("Valid by auditor.example/witness")).to_be_visible()
    expect(page.get_by_text("recomputed from all")).to_be_visible()
    journey.screenshot()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.goto(site.url + "/audit/log")
    assert "/login?next=%2Faudit%2Flog" in page.url


def test_public_sees_the_report_and_checkpoint(
    site: Site, story: Story, page: Page, tmp_path: Path
) -> None:
    journey = Journey(page, site.url, "public", tmp_path)
    journey.goto("/")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    journey.goto("/promises")
    journey.goto("/transparency/checkpoint")
    verifier_key = site.app.state.log_signer.verifier_key
    expect(page.locator("#verifier-key")).to_have_text(verifier_key)
    expect(page.locator("#checkpoint-note")).to_contain_text(verifier_key.split("+")[0])
    # Everything in this story happened this quarter, which is published only once it ends:
    # while it runs, its counts would tell a requester who was asked and who said no.
    current = reports.current_quarter(site.community.now())
    journey.goto("/transparency")
    expect(page.locator("#publication-note")).to_contain_text(
        "the current quarter is published when it ends"
    )
    expect(page.get_by_role("region", name=current.quarter)).to_have_count(0)
    # The page as it will be when the quarter ends, from the same database (the live server
    # runs on the real clock), served to the browser in place of the live one.
    original = site.app.state.clock
    site.app.state.clock = lambda: current.end
    try:
        ended = site.community.client.get("/transparency", headers={"Accept": "text/html"})
    finally:
        site.app.state.clock = original
    assert ended.status_code == 200
    page.route(
        site.url + "/transparency",
        lambda route: route.fulfill(
            status=200, content_type=ended.headers["content-type"], body=ended.text
        ),
    )
    journey.goto("/transparency")
    quarter = page.get_by_role("region", name=current.quarter)
    chart = quarter.get_by_role("img")
    expect(chart).to_be_visible()
    title = chart.locator("title").text_content() or ""
    # Three approved requests, fewer than reports.MIN_APPROVED_REQUESTS: what residents did
    # is withheld, said in words beside the chart, with the reason.
    for line in (
        "Requests received 3",
        "Approved 3",
        "Residents who shared withheld",
        "Residents who said no withheld",
        "Clip downloads withheld",
    ):
        assert line in title, title
    expect(quarter.locator(f"#w-{current.quarter}")).to_contain_text(
        f"Withheld for {current.quarter}: Residents asked"
    )
    expect(quarter.locator(f"#w-{current.quarter}")).to_contain_text(reports.WITHHELD_REASON)
    journey.screenshot()
