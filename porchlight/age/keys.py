"""Native age recipient types (c2sp.org/age, "Native recipient types").

* mlkem768x25519: HPKE SealBase with the MLKEM768-X25519 KEM (draft-ietf-hpke-pq /
  filippo.io/hpke-pq), HKDF-SHA256 and ChaCha20Poly1305, info
  "age-encryption.org/mlkem768x25519". The 32-byte identity seed expands with
  SHAKE256 to 96 bytes: 64 for the ML-KEM-768 seed (d || z), 32 for the X25519 key.
  Recipient `age1pq1...` is the ML-KEM encapsulation key followed by the X25519 point.
* X25519: ephemeral ECDH, HKDF-SHA-256 wrap key, ChaCha20-Poly1305 with a zero nonce.
* scrypt: passphrase, N = 2**work_factor, r = 8, p = 1; must be the only stanza.

Identities return None for stanzas that are not theirs or do not open, and raise
MalformedError for stanzas addressed to their type that break the spec's MUSTs.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from porchlight.age.encoding import b64_decode, b64_encode, bech32_decode, bech32_encode
from porchlight.age.errors import MalformedError
from porchlight.age.header import Stanza

if TYPE_CHECKING:
    from cryptography.hazmat.primitives import hpke

FILE_KEY_SIZE = 16
_WRAPPED_SIZE = FILE_KEY_SIZE + 16
_ZERO_NONCE = bytes(12)

X25519_LABEL = b"age-encryption.org/v1/X25519"
SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
HYBRID_INFO = b"age-encryption.org/mlkem768x25519"
_HYBRID_ENC_SIZE = 1088 + 32
_MLKEM_PUBLIC_SIZE = 1184

DEFAULT_WORK_FACTOR = 18
# age's own default ceiling: above it, unlocking takes minutes and gigabytes.
MAX_WORK_FACTOR = 22
_WORK_FACTOR = re.compile(r"[1-9][0-9]*")


class Recipient(ABC):
    """Something a file key can be wrapped to."""

    @abstractmethod
    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Return the stanzas that carry file_key to this recipient."""

    @property
    def post_quantum(self) -> bool:
        return False


class Identity(ABC):
    """Something that can unwrap a file key from a header's stanzas."""

    @abstractmethod
    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key, None when no stanza opens, or raise MalformedError."""

    def recipient(self) -> Recipient:
        raise TypeError(f"{type(self).__name__} has no public recipient")


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _open_body(key: bytes, body: bytes) -> bytes | None:
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, body, None)
    except InvalidTag:
        return None


def _check_body(stanza: Stanza) -> None:
    # Checked before any decryption, to avoid a partitioning oracle (spec MUST).
    if len(stanza.body) != _WRAPPED_SIZE:
        raise MalformedError(f"the {stanza.type} stanza does not wrap a 16-byte file key")


# --- X25519 ---------------------------------------------------------------------------------


class X25519Recipient(Recipient):
    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != 32:
            raise MalformedError("an X25519 recipient is 32 bytes")
        self.public_bytes = public_key

    def __str__(self) -> str:
        return bech32_encode("age", self.public_bytes)

    def __repr__(self) -> str:
        return f"X25519Recipient({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519Recipient) and other.public_bytes == self.public_bytes

    def __hash__(self) -> int:
        return hash(self.public_bytes)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        ephemeral = x25519.X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(self.public_bytes))
        key = _hkdf(shared, share + self.public_bytes, X25519_LABEL)
        body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)
        return [Stanza("X25519", (b64_encode(share).decode(),), body)]


class X25519Identity(Identity):
    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise MalformedError("an X25519 identity is 32 bytes")
        self._secret = secret
        self._key = x25519.X25519PrivateKey.from_private_bytes(secret)
        self._public = self._key.public_key().public_bytes_raw()

    def __str__(self) -> str:
        return bech32_encode("AGE-SECRET-KEY-", self._secret).upper()

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self.recipient()})"

    def recipient(self) -> X25519Recipient:
        return X25519Recipient(self._public)

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != "X25519":
                continue
            if len(stanza.args) != 1:
                raise MalformedError("an X25519 stanza must have exactly one argument")
            share = b64_decode(stanza.args[0].encode(), "X25519 ephemeral share")
            if len(share) != 32:
                raise MalformedError("an X25519 stanza's ephemeral share is not 32 bytes")
            _check_body(stanza)
            try:
                shared = self._key.exchange(x25519.X25519PublicKey.from_public_bytes(share))
            except ValueError as error:
                # cryptography refuses the all-zero shared secret of low-order points.
                raise MalformedError("an X25519 stanza uses a low-order point") from error
            if shared == bytes(32):
                raise MalformedError("an X25519 stanza uses a low-order point")
            file_key = _open_body(_hkdf(shared, share + self._public, X25519_LABEL), stanza.body)
            if file_key is not None:
                return file_key
        return None


# --- mlkem768x25519 ---------------------------------------------------------------------------
# ML-KEM and HPKE are imported where used: classic X25519 files never need them.


def _hybrid_suite() -> hpke.Suite:
    from cryptography.hazmat.primitives import hpke

    return hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


class HybridRecipient(Recipient):
    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != _MLKEM_PUBLIC_SIZE + 32:
            raise MalformedError("an mlkem768x25519 recipient is 1216 bytes")
        from cryptography.hazmat.primitives import hpke
        from cryptography.hazmat.primitives.asymmetric import mlkem

        try:
            self._key = hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(public_key[:_MLKEM_PUBLIC_SIZE]),
                x25519.X25519PublicKey.from_public_bytes(public_key[_MLKEM_PUBLIC_SIZE:]),
            )
        except ValueError as error:
            raise MalformedError("an mlkem768x25519 recipient is not a valid key") from error
        self.public_bytes = public_key

    @property
    def post_quantum(self) -> bool:
        return True

    def __str__(self) -> str:
        return bech32_encode("age1pq", self.public_bytes)

    def __repr__(self) -> str:
        return f"HybridRecipient({str(self)[:20]}...)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HybridRecipient) and other.public_bytes == self.public_bytes

    def __hash__(self) -> int:
        return hash(self.public_bytes)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        sealed = _hybrid_suite().encrypt(file_key, self._key, info=HYBRID_INFO)
        enc, body = sealed[:_HYBRID_ENC_SIZE], sealed[_HYBRID_ENC_SIZE:]
        return [Stanza("mlkem768x25519", (b64_encode(enc).decode(),), body)]


class HybridIdentity(Identity):
    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise MalformedError("an mlkem768x25519 identity is 32 bytes")
        from cryptography.hazmat.primitives import hpke
        from cryptography.hazmat.primitives.asymmetric import mlkem

        self._seed = seed
        shake = hashes.Hash(hashes.SHAKE256(digest_size=96))
        shake.update(seed)
        expanded = shake.finalize()
        self._mlkem = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        self._x25519 = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
        self._key = hpke.MLKEM768X25519PrivateKey(self._mlkem, self._x25519)

    def __str__(self) -> str:
        return bech32_encode("AGE-SECRET-KEY-PQ-", self._seed).upper()

    def __repr__(self) -> str:
        return f"HybridIdentity(recipient={str(self.recipient())[:20]}...)"

    def recipient(self) -> HybridRecipient:
        return HybridRecipient(
            self._mlkem.public_key().public_bytes_raw()
            + self._x25519.public_key().public_bytes_raw()
        )

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != "mlkem768x25519":
                continue
            if len(stanza.args) != 1:
                raise MalformedError("an mlkem768x25519 stanza must have exactly one argument")
            enc = b64_decode(stanza.args[0].encode(), "mlkem768x25519 enc")
            if len(enc) != _HYBRID_ENC_SIZE:
                raise MalformedError("an mlkem768x25519 stanza's enc is not 1120 bytes")
            _check_body(stanza)
            try:
                shared = self._x25519.exchange(x25519.X25519PublicKey.from_public_bytes(enc[-32:]))
            except ValueError as error:
                raise MalformedError("an mlkem768x25519 stanza uses a low-order point") from error
            if shared == bytes(32):
                raise MalformedError("an mlkem768x25519 stanza uses a low-order point")
            try:
                return _hybrid_suite().decrypt(enc + stanza.body, self._key, info=HYBRID_INFO)
            except (InvalidTag, ValueError):
                continue
        return None


# --- scrypt ------------------------------------------------------------------------------------


def _passphrase_bytes(passphrase: bytes | str) -> bytes:
    data = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    if not data:
        raise ValueError("the passphrase is empty")
    return data


def _scrypt(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt  # only passphrases need it

    kdf = Scrypt(salt=SCRYPT_LABEL + salt, length=32, n=1 << work_factor, r=8, p=1)
    return kdf.derive(passphrase)


class ScryptRecipient(Recipient):
    """Passphrase encryption; an scrypt stanza must be the only one in its header."""

    def __init__(self, passphrase: bytes | str, work_factor: int = DEFAULT_WORK_FACTOR) -> None:
        if not 1 <= work_factor <= MAX_WORK_FACTOR:
            raise ValueError(f"the scrypt work factor must be between 1 and {MAX_WORK_FACTOR}")
        self._passphrase = _passphrase_bytes(passphrase)
        self.work_factor = work_factor

    def __repr__(self) -> str:
        return f"ScryptRecipient(work_factor={self.work_factor})"

    def wrap(self, file_key: bytes) -> list[Stanza]:
        salt = os.urandom(16)
        key = _scrypt(self._passphrase, salt, self.work_factor)
        body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)
        return [Stanza("scrypt", (b64_encode(salt).decode(), str(self.work_factor)), body)]


class ScryptIdentity(Identity):
    def __init__(self, passphrase: bytes | str, max_work_factor: int = MAX_WORK_FACTOR) -> None:
        self._passphrase = _passphrase_bytes(passphrase)
        self._max_work_factor = max_work_factor

    def __repr__(self) -> str:
        return "ScryptIdentity()"

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != "scrypt":
                continue
            if len(stanzas) != 1:
                raise MalformedError("an scrypt stanza must be alone in the header")
            if len(stanza.args) != 2:
                raise MalformedError("an scrypt stanza must have exactly two arguments")
            salt = b64_decode(stanza.args[0].encode(), "scrypt salt")
            if len(salt) != 16:
                raise MalformedError("an scrypt stanza's salt is not 16 bytes")
            if _WORK_FACTOR.fullmatch(stanza.args[1]) is None:
                raise MalformedError("an scrypt stanza's work factor is not a plain decimal")
            work_factor = int(stanza.args[1])
            if work_factor > self._max_work_factor:
                raise MalformedError(
                    f"the scrypt work factor {work_factor} is above the limit of "
                    f"{self._max_work_factor}; unlocking would take too long"
                )
            _check_body(stanza)
            file_key = _open_body(_scrypt(self._passphrase, salt, work_factor), stanza.body)
            if file_key is not None:
                return file_key
        return None


# --- parsing and generation --------------------------------------------------------------------


def generate_identity(kind: str = "pq") -> X25519Identity | HybridIdentity:
    """A new identity: post-quantum hybrid ("pq", the default) or classic "x25519"."""
    if kind == "pq":
        return HybridIdentity(os.urandom(32))
    if kind == "x25519":
        return X25519Identity(os.urandom(32))
    raise ValueError(f"unknown identity kind {kind!r} (expected 'pq' or 'x25519')")


def parse_recipient(text: str) -> X25519Recipient | HybridRecipient:
    """Parse an `age1...` or `age1pq1...` recipient string."""
    text = text.strip()
    hrp, data = bech32_decode(text)
    if text != text.lower():
        raise MalformedError("a recipient must be written in lower case")
    if hrp == "age":
        return X25519Recipient(data)
    if hrp == "age1pq":
        return HybridRecipient(data)
    raise MalformedError(f"unknown recipient type '{hrp}1...' (expected age1... or age1pq1...)")


def parse_identity(text: str) -> X25519Identity | HybridIdentity:
    """Parse one `AGE-SECRET-KEY-1...` or `AGE-SECRET-KEY-PQ-1...` line."""
    hrp, data = bech32_decode(text.strip())
    if hrp == "age-secret-key-":
        return X25519Identity(data)
    if hrp == "age-secret-key-pq-":
        return HybridIdentity(data)
    raise MalformedError("not an age secret key (expected AGE-SECRET-KEY-1... or -PQ-1...)")


def parse_identities(text: str) -> list[X25519Identity | HybridIdentity]:
    """Parse an identity file: one key a line, blank lines and `#` comments ignored."""
    identities: list[X25519Identity | HybridIdentity] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            identities.append(parse_identity(stripped))
        except MalformedError as error:
            # The line itself is secret; name only its position.
            raise MalformedError(f"identity line {number}: {error}") from None
    if not identities:
        raise MalformedError("no identities found (the file holds no AGE-SECRET-KEY lines)")
    return identities
