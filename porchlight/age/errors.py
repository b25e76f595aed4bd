"""The one error family of the age format (c2sp.org/age).

Callers tell three outcomes apart, as the CCTV age test kit does: the file is not a
well-formed age file (`MalformedError`), none of the given identities opens it
(`NoMatchError`), or it opened but its header MAC or payload does not authenticate, which
includes a truncated file (`AuthenticationError`). Messages are written for a person and
never contain key material.
"""

from __future__ import annotations


class AgeError(Exception):
    """Any failure to read or write an age file."""


class MalformedError(AgeError):
    """The header, a stanza, the armor or a key string is not a canonical encoding."""


class NoMatchError(AgeError):
    """The file is well formed, but no identity given can unwrap its file key."""


class AuthenticationError(AgeError):
    """The header MAC or a payload chunk failed to authenticate, or the file was cut short."""


class PassphraseRequiredError(AgeError):
    """An identity file is passphrase-protected and no passphrase was supplied."""
