"""The age file format, v1 (c2sp.org/age), with the mlkem768x25519 post-quantum recipient.

Every clip Porchlight records is an age file: the standard `age` tool opens it. This
package is pure Python on `cryptography`; see each module for the spec section it covers:
`encoding` (base64, Bech32), `header`, `stream` (STREAM payload), `armor`, `keys`
(recipient types), `api` (streams and rewrap), `files` (file-to-file and identity files).
"""

from porchlight.age.api import decryptor, encryptor, rewrap
from porchlight.age.errors import (
    AgeError,
    AuthenticationError,
    MalformedError,
    NoMatchError,
    PassphraseRequiredError,
)
from porchlight.age.files import (
    decrypt_file,
    encrypt_file,
    read_identity_file,
    rewrap_file,
    write_identity_file,
)
from porchlight.age.header import Header, Stanza, parse_header
from porchlight.age.keys import (
    HybridIdentity,
    HybridRecipient,
    Identity,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
    generate_identity,
    parse_identities,
    parse_identity,
    parse_recipient,
)
from porchlight.age.stream import CHUNK_SIZE, AgeReader, AgeWriter

__all__ = [
    "CHUNK_SIZE",
    "AgeError",
    "AgeReader",
    "AgeWriter",
    "AuthenticationError",
    "Header",
    "HybridIdentity",
    "HybridRecipient",
    "Identity",
    "MalformedError",
    "NoMatchError",
    "PassphraseRequiredError",
    "Recipient",
    "ScryptIdentity",
    "ScryptRecipient",
    "Stanza",
    "X25519Identity",
    "X25519Recipient",
    "decrypt_file",
    "decryptor",
    "encrypt_file",
    "encryptor",
    "generate_identity",
    "parse_header",
    "parse_identities",
    "parse_identity",
    "parse_recipient",
    "read_identity_file",
    "rewrap",
    "rewrap_file",
    "write_identity_file",
]
