"""Strict encodings used by age (c2sp.org/age, "Conventions used in this document").

* Unpadded ("raw") standard base64, canonical per RFC 4648 section 3.5: decoders reject
  padding, characters outside the alphabet and non-zero trailing bits.
* Bech32 as in BIP 173 but without the 90-character length limit; a string is all upper
  or all lower case, and the checksum is over the lower-case form.
"""

from __future__ import annotations

import base64
import binascii
import re

from porchlight.age.errors import MalformedError

_RAW_B64 = re.compile(rb"[A-Za-z0-9+/]*")


def b64_encode(data: bytes) -> bytes:
    """Canonical unpadded base64."""
    return base64.b64encode(data).rstrip(b"=")


def b64_decode(text: bytes, what: str = "base64 value") -> bytes:
    """Decode unpadded base64, rejecting every non-canonical form."""
    if _RAW_B64.fullmatch(text) is None or len(text) % 4 == 1:
        raise MalformedError(f"{what} is not valid unpadded base64")
    padded = text + b"=" * (-len(text) % 4)
    try:
        data = base64.b64decode(padded, validate=True)
    except binascii.Error as error:
        raise MalformedError(f"{what} is not valid base64") from error
    # Non-zero trailing bits decode silently; re-encoding exposes them.
    if b64_encode(data) != text:
        raise MalformedError(f"{what} is not canonical base64")
    return data


_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {c: i for i, c in enumerate(_CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(_GENERATOR):
            if (top >> i) & 1:
                checksum ^= generator
    return checksum


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    accumulator = 0
    bits = 0
    out: list[int] = []
    max_value = (1 << to_bits) - 1
    for value in data:
        accumulator = (accumulator << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((accumulator >> bits) & max_value)
    if pad:
        if bits:
            out.append((accumulator << (to_bits - bits)) & max_value)
    elif bits >= from_bits or (accumulator << (to_bits - bits)) & max_value:
        raise MalformedError("Bech32 string has invalid padding")
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    """Encode as lower-case Bech32 (callers upper-case secret keys themselves)."""
    hrp = hrp.lower()
    values = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod([*_hrp_expand(hrp), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)


def bech32_decode(text: str) -> tuple[str, bytes]:
    """Return (lower-case hrp, data); raise MalformedError on any defect."""
    if text.lower() != text and text.upper() != text:
        raise MalformedError("Bech32 string mixes upper and lower case")
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise MalformedError("Bech32 string has characters outside printable ASCII")
    lowered = text.lower()
    position = lowered.rfind("1")
    if position < 1 or position + 7 > len(lowered):
        raise MalformedError("Bech32 string has no separator or is too short")
    hrp = lowered[:position]
    try:
        values = [_CHARSET_INDEX[c] for c in lowered[position + 1 :]]
    except KeyError as error:
        raise MalformedError("Bech32 string has a character outside its alphabet") from error
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise MalformedError("Bech32 checksum does not match (a typo in the key?)")
    return hrp, bytes(_convert_bits(values[:-6], 5, 8, pad=False))
