"""Checking an agency's age recipient before it is stored (porchlight.age does the parsing).

Post-quantum hybrid recipients (`age1pq1...`, mlkem768x25519) are the default an agency should
register; classic X25519 (`age1...`) recipients are accepted, as DESIGN allows.
"""

from __future__ import annotations

from app.errors import InvalidInput
from porchlight.age import AgeError, HybridRecipient, X25519Recipient, parse_recipient


def check_recipient(recipient: str) -> str:
    """Return the recipient, stripped, if it is a public age recipient; else InvalidInput."""
    recipient = recipient.strip()
    try:
        parsed = parse_recipient(recipient)
    except (AgeError, ValueError) as error:
        raise InvalidInput(f"not a valid age recipient: {error}") from None
    if not isinstance(parsed, HybridRecipient | X25519Recipient):
        raise InvalidInput("the agency recipient must be an age1pq1... or age1... public key")
    return recipient


def is_post_quantum(recipient: str) -> bool:
    return recipient.startswith("age1pq1")
