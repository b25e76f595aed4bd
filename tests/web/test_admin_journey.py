"""Admin in a browser: invite a person (who accepts), register an agency, revoke a device."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from app.permissions import Role
from tests.server.factories import pq_recipient
from tests.web.browser import Journey
from tests.web.conftest import Site


def test_admin_invites_and_revokes(site: Site, page: Page, tmp_path: Path) -> None:
    community = site.community
    admin = community.person(Role.admin)
    owner = community.person(Role.resident)
    device = community.enrol_device(owner, name="side gate")
    journey = Journey(page, site.url, "admin", tmp_path)
    journey.sign_in(admin.username, admin.password)
    expect(page.get_by_role("heading", name="People")).to_be_visible()

    journey.goto("/admin/agencies")
    page.get_by_label("Name").fill("Testshire Constabulary")
    page.get_by_label("Jurisdiction").fill("Testshire")
    page.get_by_label("Age recipient (public key)").fill("age1notakey")
    page.get_by_role("button", name="Register agency").click()
    expect(page.get_by_text("not a valid age recipient")).to_be_visible()
    journey.check()
    page.get_by_label("Age recipient (public key)").fill(pq_recipient())
    page.get_by_role("button", name="Register agency").click()
    expect(page.get_by_role("heading", name="Testshire Constabulary")).to_be_visible()
    journey.check()

    journey.goto("/admin/invites")
    page.get_by_label("Role").select_option("resident")
    page.get_by_role("button", name="Create invite").click()
    code = page.locator("#invite-code").inner_text().strip()
    assert code.startswith("inv")
    journey.check()

    # The invited person accepts in their own browser.
    invited = page.context.browser
    assert invited is not None
    other = invited.new_context(bypass_csp=True).new_page()
    other_journey = Journey(other, site.url, "invitee", tmp_path)
    other_journey.goto(f"/invite?code={code}")
    other.get_by_label("User name").fill("newneighbour")
    other.get_by_label("Password", exact=True).fill("short")
    other.get_by_label("Password again").fill("short")
    other.get_by_role("button", name="Create my account").click()
    expect(other.locator("#e-password")).to_contain_text("at least 12 characters")
    other_journey.check()
    other.get_by_label("Password", exact=True).fill("copper-kettle-evening")
    other.get_by_label("Password again").fill("copper-kettle-evening")
    other.get_by_role("button", name="Create my account").click()
    expect(other.get_by_text("Your account is ready")).to_be_visible()
    other_journey.sign_in("newneighbour", "copper-kettle-evening")
    expect(other.get_by_role("heading", name="My devices")).to_be_visible()
    other.context.close()

    journey.goto("/admin/people")
    expect(page.get_by_role("cell", name="newneighbour", exact=True)).to_be_visible()
    journey.goto("/admin/invites")
    expect(page.get_by_role("row").filter(has_text="resident").last).not_to_contain_text("Not yet")

    journey.goto("/admin/policy")
    page.get_by_label("Largest area radius (metres)").fill("0")
    page.get_by_role("button", name="Save policy").click()
    expect(page.locator("#e-max_radius_m")).to_contain_text("greater than or equal to 10")
    journey.check()
    page.get_by_label("Largest area radius (metres)").fill("400")
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_text("Policy saved")).to_be_visible()
    expect(page.get_by_label("Largest area radius (metres)")).to_have_value("400")
    journey.check()

    # Footage and approvals are not the admin's: the reviewer's page is refused.
    refused = page.goto(site.url + "/review")
    assert refused is not None and refused.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    journey.check()

    journey.goto("/admin/devices")
    page.get_by_role("button", name=f"Revoke side gate (#{device.id})").click()
    expect(page.get_by_text("Device revoked")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="side gate")).to_contain_text("Revoked")
    journey.check()
    # The admin sees no footage, no approvals: their navigation offers neither.
    nav = page.get_by_role("navigation", name="Main").inner_text()
    assert not re.search(r"review|footage|clip|request", nav, re.IGNORECASE)
    journey.screenshot()
