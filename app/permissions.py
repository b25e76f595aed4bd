"""Roles and named permissions, in one table (DESIGN "Roles").

Routes ask for a permission with `Depends(require("agency:manage"))`; they never test roles.
Ownership ("a resident sees only their own devices") is enforced in the queries, not here.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    resident = "resident"
    reviewer = "reviewer"
    admin = "admin"
    auditor = "auditor"
    requester = "requester"


PERMISSIONS: dict[str, str] = {
    "account:self": "see one's own account, manage one's own API tokens",
    "invite:create": "issue single-use invite codes for any role",
    "person:manage": "list people and their roles",
    "person:audit": "see who holds the reviewer, auditor and admin roles and who appointed them",
    "agency:manage": "register requesting agencies",
    "agency:read": "read the list of registered agencies",
    "device:own": "enrol, locate and revoke one's own devices",
    "device:admin": "list and revoke any device (never its location)",
    "log:read": "read every log entry",
    "log:cosign": "register cosigner keys whose cosignatures of checkpoints the log accepts",
    "request:submit": "file footage requests for one's own agency",
    "request:review": "approve or reject submitted requests",
    "request:read_all": "read every request record (never footage)",
    "request:read": "read requests: one's own agency's (requesters) or all (auditors)",
    "ask:answer": "see, decline and revoke asks for one's own devices",
    "policy:manage": "change the community's request policy",
}

_EVERYONE = {"account:self"}

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.resident: frozenset(_EVERYONE | {"device:own", "ask:answer"}),
    Role.reviewer: frozenset(_EVERYONE | {"request:review", "agency:read"}),
    Role.admin: frozenset(
        _EVERYONE
        | {
            "invite:create",
            "person:manage",
            "agency:manage",
            "agency:read",
            "device:admin",
            "policy:manage",
        }
    ),
    Role.auditor: frozenset(
        _EVERYONE
        | {
            "log:read",
            "log:cosign",
            "request:read_all",
            "request:read",
            "agency:read",
            "person:audit",
        }
    ),
    Role.requester: frozenset(_EVERYONE | {"request:submit", "request:read"}),
}

assert all(p in PERMISSIONS for perms in ROLE_PERMISSIONS.values() for p in perms)


def has_permission(role: Role | str, permission: str) -> bool:
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")
    return permission in ROLE_PERMISSIONS[Role(role)]
