"""Who may call each route: THE table the role-by-route test checks the app against.

Every (METHOD, path) the app serves must appear here, or test_role_routes fails. A rule is
the set of roles allowed (from DESIGN "Roles"), or PUBLIC (no sign-in), or DEVICE (a signed
device call). Add your route's line when you add the route.
"""

from __future__ import annotations

from app.permissions import Role

PUBLIC = "public"
DEVICE = "device"
SIGNED_IN = frozenset(Role)

R = Role
Rule = frozenset[Role] | str

ROUTE_RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/assets/{name}"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    # footage requests (app/requests, app/policy)
    ("GET", "/api/policy"): SIGNED_IN,
    ("PUT", "/api/policy"): frozenset({R.admin}),
    ("POST", "/api/requests"): frozenset({R.requester}),
    ("GET", "/api/requests"): frozenset({R.requester, R.auditor}),
    ("GET", "/api/requests/{request_id}"): frozenset({R.requester, R.auditor}),
    ("POST", "/api/requests/{request_id}/close"): frozenset({R.requester}),
    ("GET", "/api/requests/{request_id}/shared"): frozenset({R.requester}),
    ("GET", "/api/requests/{request_id}/shared/{shared_clip_id}"): frozenset({R.requester}),
    ("GET", "/api/reviews"): frozenset({R.reviewer}),
    ("POST", "/api/requests/{request_id}/review"): frozenset({R.reviewer}),
    ("GET", "/api/asks"): frozenset({R.resident}),
    ("POST", "/api/asks/{ask_id}/decline"): frozenset({R.resident}),
    ("POST", "/api/asks/{ask_id}/revoke"): frozenset({R.resident}),
    ("GET", "/api/device/asks"): DEVICE,
    ("POST", "/api/device/asks/{ask_id}/decline"): DEVICE,
    ("POST", "/api/device/asks/{ask_id}/consent"): DEVICE,
    ("PUT", "/api/device/asks/{ask_id}/clips/{clip_id}"): DEVICE,
    # accounts
    ("POST", "/api/session"): PUBLIC,
    ("DELETE", "/api/session"): SIGNED_IN,
    ("GET", "/api/me"): SIGNED_IN,
    ("POST", "/api/tokens"): SIGNED_IN,
    ("GET", "/api/tokens"): SIGNED_IN,
    ("DELETE", "/api/tokens/{token_id}"): SIGNED_IN,
    ("POST", "/api/invites"): frozenset({R.admin}),
    ("GET", "/api/invites"): frozenset({R.admin}),
    ("POST", "/api/invites/accept"): PUBLIC,
    ("GET", "/api/people"): frozenset({R.admin}),
    ("POST", "/api/people/{user_id}/disable"): frozenset({R.admin}),
    # agencies
    ("POST", "/api/agencies"): frozenset({R.admin}),
    ("GET", "/api/agencies"): frozenset({R.admin, R.auditor, R.reviewer}),
    ("GET", "/api/agencies/{agency_id}"): frozenset({R.admin, R.auditor, R.reviewer}),
    # devices
    ("POST", "/api/devices/enrolment-codes"): frozenset({R.resident}),
    ("POST", "/api/devices/enroll"): PUBLIC,
    ("GET", "/api/devices"): frozenset({R.resident}),
    ("PUT", "/api/devices/{device_id}/location"): frozenset({R.resident}),
    ("POST", "/api/devices/{device_id}/revoke"): frozenset({R.resident}),
    ("GET", "/api/admin/devices"): frozenset({R.admin}),
    ("POST", "/api/admin/devices/{device_id}/revoke"): frozenset({R.admin}),
    ("GET", "/api/device/self"): DEVICE,
    # log
    ("GET", "/api/log/entries"): frozenset({R.auditor}),
    ("GET", "/log/checkpoint"): PUBLIC,
    # Hash tiles are public; entry bundles hold every entry's bytes (who was asked, who
    # declined), so only auditors may read them (DESIGN promise 3).
    ("GET", "/log/tile/{path:path}"): PUBLIC,
    ("GET", "/log/tile/entries/{path:path}"): frozenset({R.auditor}),
    ("GET", "/log/proof/inclusion"): PUBLIC,
    ("GET", "/log/proof/consistency"): PUBLIC,
    ("POST", "/log/cosignatures"): PUBLIC,
    ("GET", "/api/log/public"): PUBLIC,
    ("GET", "/api/transparency"): PUBLIC,
    ("POST", "/api/log/auditor-keys"): frozenset({R.auditor}),
    ("GET", "/api/log/auditor-keys"): frozenset({R.auditor}),
    ("POST", "/api/log/auditor-keys/{key_id}/revoke"): frozenset({R.auditor}),
    # web pages (app/web): GETs of role pages redirect a signed-out browser to /login
    ("GET", "/static/{name}"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/promises"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): SIGNED_IN,
    ("GET", "/invite"): PUBLIC,
    ("POST", "/invite"): PUBLIC,
    ("GET", "/resident/devices"): frozenset({R.resident}),
    ("POST", "/resident/devices/enrolment-code"): frozenset({R.resident}),
    ("POST", "/resident/devices/{device_id}/location"): frozenset({R.resident}),
    ("POST", "/resident/devices/{device_id}/revoke"): frozenset({R.resident}),
    ("GET", "/admin/people"): frozenset({R.admin}),
    ("POST", "/admin/people/{user_id}/disable"): frozenset({R.admin}),
    ("GET", "/admin/invites"): frozenset({R.admin}),
    ("POST", "/admin/invites"): frozenset({R.admin}),
    ("GET", "/admin/agencies"): frozenset({R.admin}),
    ("POST", "/admin/agencies"): frozenset({R.admin}),
    ("GET", "/admin/devices"): frozenset({R.admin}),
    ("POST", "/admin/devices/{device_id}/revoke"): frozenset({R.admin}),
    ("GET", "/transparency"): PUBLIC,
    ("GET", "/transparency/checkpoint"): PUBLIC,
    ("GET", "/resident/asks"): frozenset({R.resident}),
    ("GET", "/resident/history"): frozenset({R.resident}),
    ("POST", "/resident/asks/{ask_id}/decline"): frozenset({R.resident}),
    ("POST", "/resident/asks/{ask_id}/revoke"): frozenset({R.resident}),
    ("GET", "/review"): frozenset({R.reviewer}),
    ("POST", "/review/{request_id}"): frozenset({R.reviewer}),
    ("GET", "/requests"): frozenset({R.requester}),
    ("GET", "/requests/new"): frozenset({R.requester}),
    ("POST", "/requests/new"): frozenset({R.requester}),
    ("GET", "/requests/{request_id}"): frozenset({R.requester}),
    ("POST", "/requests/{request_id}/close"): frozenset({R.requester}),
    ("GET", "/requests/{request_id}/clips/{shared_clip_id}"): frozenset({R.requester}),
    ("GET", "/audit/requests"): frozenset({R.auditor}),
    ("GET", "/audit/requests/{request_id}"): frozenset({R.auditor}),
    ("GET", "/audit/log"): frozenset({R.auditor}),
    ("GET", "/audit/checkpoint"): frozenset({R.auditor}),
    ("GET", "/audit/people"): frozenset({R.auditor}),
    ("GET", "/audit/export/requests.csv"): frozenset({R.auditor}),
    ("GET", "/admin/policy"): frozenset({R.admin}),
    ("POST", "/admin/policy"): frozenset({R.admin}),
}
