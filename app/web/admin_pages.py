"""Admin pages: people, invites, agencies and keys, devices, policy. No footage, no approvals."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import Depends, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.accounts import service as accounts
from app.accounts.models import User
from app.agencies import service as agencies
from app.agencies.recipients import is_post_quantum
from app.agencies.schemas import AgencyIn
from app.deps import NowDep, PrincipalDep, RowId, SessionDep, SettingsDep, require
from app.devices import service as devices
from app.errors import AppError
from app.permissions import Role
from app.policy import service as policies
from app.policy.schemas import PolicyIn
from app.web.render import attempt, field_errors, page_router, public_url, render, see_other

router = page_router(prefix="/admin", tags=["pages"])

PeopleAdmin = Annotated[User, Depends(require("person:manage"))]
InviteAdmin = Annotated[User, Depends(require("invite:create"))]
AgencyAdmin = Annotated[User, Depends(require("agency:manage"))]
DeviceAdmin = Annotated[User, Depends(require("device:admin"))]


@router.get("/people")
def people_page(
    request: Request, _: PeopleAdmin, principal: PrincipalDep, session: SessionDep
) -> Response:
    """Everyone with an account, their role and agency."""
    names = {a.id: a.name for a in agencies.list_agencies(session)}
    return render(
        request,
        "admin/people.html",
        {
            "title": "People",
            "people": accounts.list_users(session),
            "agency_names": names,
            "done": request.query_params.get("done") == "disabled",
        },
        principal=principal,
    )


@router.post("/people/{user_id}/disable")
def disable_person(
    user_id: RowId, admin: PeopleAdmin, session: SessionDep, now: NowDep
) -> Response:
    """Disable an account (its sessions and tokens stop at once)."""
    accounts.disable_user(session, admin, user_id, now)
    return see_other("/admin/people?done=disabled")


def _invites_page(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    *,
    code: str | None = None,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "admin/invites.html",
        {
            "title": "Invites",
            "invites": accounts.list_invites(session),
            "agencies": agencies.list_agencies(session),
            "roles": [r.value for r in Role],
            "code": code,
            "errors": errors or {},
            "values": values or {},
            "public_url": public_url(request),
        },
        principal=principal,
        status_code=status_code,
    )


@router.get("/invites")
def invites_page(
    request: Request, _: InviteAdmin, principal: PrincipalDep, session: SessionDep
) -> Response:
    """Invites issued and whether they were used (never the codes)."""
    return _invites_page(request, principal, session)


@router.post("/invites")
def create_invite(
    request: Request,
    admin: InviteAdmin,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    role: Annotated[str, Form()] = "",
    agency_id: Annotated[str, Form()] = "",
) -> Response:
    """Issue an invite code for a role and show it once."""
    values = {"role": role, "agency_id": agency_id}
    errors: dict[str, str] = {}
    if role not in {r.value for r in Role}:
        errors["role"] = "choose a role"
    agency: int | None = None
    if agency_id.strip():
        if not agency_id.strip().isdigit():
            errors["agency_id"] = "choose an agency from the list"
        else:
            agency = int(agency_id)
    if not errors:
        outcome = attempt(
            session,
            lambda: accounts.create_invite(session, admin, Role(role), agency, settings, now),
        )
        if not isinstance(outcome, AppError):
            return _invites_page(request, principal, session, code=outcome[1])
        errors = field_errors(outcome.message, ["agency"])
        errors = {("agency_id" if k == "agency" else k): v for k, v in errors.items()}
    return _invites_page(request, principal, session, errors=errors, values=values, status_code=422)


def _agencies_page(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    rows = agencies.list_agencies(session)
    return render(
        request,
        "admin/agencies.html",
        {
            "title": "Agencies",
            "agencies": [{"agency": a, "post_quantum": is_post_quantum(a.recipient)} for a in rows],
            "errors": errors or {},
            "values": values or {},
            "done": request.query_params.get("done") == "registered",
        },
        principal=principal,
        status_code=status_code,
    )


def _agency_text_errors(values: dict[str, str]) -> dict[str, str]:
    """The API's rules for an agency's name and jurisdiction (AgencyIn: no control or
    formatting characters), as field errors. The service checks the recipient, saying why."""
    try:
        AgencyIn.model_validate({field: value.strip() for field, value in values.items()})
    except ValidationError as error:
        return {
            str(item["loc"][0]): str(item["msg"])
            for item in error.errors()
            if item["loc"] and item["loc"][0] in {"name", "jurisdiction"}
        }
    return {}


@router.get("/agencies")
def agencies_page(
    request: Request, _: AgencyAdmin, principal: PrincipalDep, session: SessionDep
) -> Response:
    """Registered agencies and the age recipient their shared clips are sealed to."""
    return _agencies_page(request, principal, session)


@router.post("/agencies")
def register_agency(
    request: Request,
    admin: AgencyAdmin,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    name: Annotated[str, Form()] = "",
    jurisdiction: Annotated[str, Form()] = "",
    recipient: Annotated[str, Form()] = "",
) -> Response:
    """Register a requesting agency."""
    values = {"name": name, "jurisdiction": jurisdiction, "recipient": recipient}
    errors = {
        field: f"{label} is required"
        for field, label in (
            ("name", "Name"),
            ("jurisdiction", "Jurisdiction"),
            ("recipient", "Age recipient"),
        )
        if not values[field].strip()
    }
    if not errors:
        errors = _agency_text_errors(values)
    if not errors:
        outcome = attempt(
            session,
            lambda: agencies.create_agency(session, admin, name, jurisdiction, recipient, now),
        )
        if not isinstance(outcome, AppError):
            return see_other("/admin/agencies?done=registered")
        errors = field_errors(outcome.message, ["recipient", "name"])
    return _agencies_page(
        request, principal, session, errors=errors, values=values, status_code=422
    )


@router.get("/devices")
def devices_page(
    request: Request, _: DeviceAdmin, principal: PrincipalDep, session: SessionDep
) -> Response:
    """Every device and its owner, never its location; revoke a lost or compromised one."""
    owners = {u.id: u.username for u in accounts.list_users(session)}
    return render(
        request,
        "admin/devices.html",
        {
            "title": "Devices",
            "devices": devices.all_devices(session),
            "owners": owners,
            "done": request.query_params.get("done") == "revoked",
        },
        principal=principal,
    )


@router.post("/devices/{device_id}/revoke")
def revoke_device(
    device_id: RowId, admin: DeviceAdmin, session: SessionDep, now: NowDep
) -> Response:
    """Revoke any device."""
    devices.revoke(session, admin, devices.get_device(session, device_id), now)
    return see_other("/admin/devices?done=revoked")


PolicyAdmin = Annotated[User, Depends(require("policy:manage"))]
POLICY_FIELDS = {
    "max_window_hours": ("Longest time window a request may cover (hours)", ""),
    "max_radius_m": ("Largest area radius (metres)", ""),
    "max_open_per_agency": ("Requests one agency may have under review or open", ""),
    "ask_deadline_days": ("Days a resident has to answer (silence means no)", ""),
    "access_window_days": ("Days shared clips stay downloadable after a request closes", ""),
    "reviewers_required": ("Reviewers who must approve (1 or 2)", ""),
    "max_clip_bytes": ("Largest shared clip (bytes)", ""),
}


def _policy_page(
    request: Request,
    principal: PrincipalDep,
    values: dict[str, str],
    *,
    errors: dict[str, str] | None = None,
    saved: bool = False,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "admin/policy.html",
        {
            "title": "Community policy",
            "fields": POLICY_FIELDS,
            "values": values,
            "errors": errors or {},
            "saved": saved,
        },
        principal=principal,
        status_code=status_code,
    )


@router.get("/policy")
def policy_page(
    request: Request, _: PolicyAdmin, principal: PrincipalDep, session: SessionDep
) -> Response:
    """The community's request policy."""
    current = asdict(policies.current(session))
    return _policy_page(
        request,
        principal,
        {k: str(v) for k, v in current.items()},
        saved=request.query_params.get("done") == "saved",
    )


async def _policy_form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {name: str(form.get(name, "")).strip() for name in POLICY_FIELDS}


@router.post("/policy")
def update_policy(
    request: Request,
    admin: PolicyAdmin,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    values: Annotated[dict[str, str], Depends(_policy_form)],
) -> Response:
    """Change the policy (bounded so a typo cannot switch a protection off; logged)."""
    errors: dict[str, str] = {}
    try:
        checked = PolicyIn.model_validate(values)
    except ValidationError as error:
        for item in error.errors():
            name = str(item["loc"][0]) if item["loc"] else ""
            errors.setdefault(name if name in POLICY_FIELDS else "", str(item["msg"]))
        return _policy_page(request, principal, values, errors=errors, status_code=422)
    policies.update(session, admin, policies.Policy(**checked.model_dump()), now)
    return see_other("/admin/policy?done=saved")
