"""What the log records of a request's warrant: a commitment, not the fields.

Every read of warrant details is logged (DESIGN, promise 4), and auditors read the whole log:
entry bundles to verify it, `/api/log/entries` to follow a request. Were the warrant's court,
docket number and judge in the `request:submit` entry, every one of those reads would be an
unlogged read of warrant details. So the entry carries `warrant_sha256` instead, and the
fields are read through the request itself (`GET /api/requests/N`, a logged `request:read`).

Anyone holding the request's warrant, as the API returns it, recomputes the commitment with
`warrant_commitment` and compares it with the entry: the log still fixes the warrant as it was
submitted, and a later change to the stored request shows. The fields include
`document_sha256`, the hash of the warrant document itself, so the commitment cannot be found
by hashing guesses built from public facts (courts, judges, docket number formats).

The commitment is SHA-256 over the domain tag `porchlight warrant v1` and a newline, followed by
the six fields as a JSON object with sorted keys, no insignificant whitespace and UTF-8
(non-ASCII characters unescaped), dates as `YYYY-MM-DD`, the form in which the API returns them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

WARRANT_FIELDS = ("court", "docket_number", "judge", "issued_on", "expires_on", "document_sha256")
_DOMAIN = b"porchlight warrant v1\n"


class WarrantError(ValueError):
    """Warrant fields that cannot be committed to (missing, extra, or not strings)."""


def warrant_commitment(warrant: Mapping[str, object]) -> str:
    """The hex SHA-256 commitment to a warrant given as the API returns it (module docstring)."""
    names = set(warrant)
    if names != set(WARRANT_FIELDS):
        missing = sorted(set(WARRANT_FIELDS) - names)
        extra = sorted(names - set(WARRANT_FIELDS))
        raise WarrantError(f"warrant fields: missing {missing}, unexpected {extra}")
    for name in WARRANT_FIELDS:
        if not isinstance(warrant[name], str):
            raise WarrantError(f"warrant field {name} must be a string (dates as YYYY-MM-DD)")
    canonical = json.dumps(
        {name: warrant[name] for name in WARRANT_FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(_DOMAIN + canonical.encode("utf-8")).hexdigest()
