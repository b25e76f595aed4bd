"""Checking an agency's age recipient string before it is stored.

Uses porchlight.age's parser when it exists; until then, a bech32 (BIP 173) check of the
two recipient kinds age uses: X25519 `age1...` (32-byte key) and post-quantum `age1pq1...`.
"""

from __future__ import annotations

import importlib

from app.errors import InvalidInput

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATORS = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(_GENERATORS):
            if (top >> i) & 1:
                checksum ^= generator
    return checksum


def _bech32_decode(text: str) -> tuple[str, bytes]:
    if text != text.lower():
        raise ValueError("recipient must be lower case")
    hrp, sep, data_part = text.rpartition("1")
    if not sep or not hrp or len(data_part) < 6:
        raise ValueError("not a bech32 string")
    try:
        values = [_CHARSET.index(c) for c in data_part]
    except ValueError:
        raise ValueError("invalid bech32 character") from None
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _polymod(expanded + values) != 1:
        raise ValueError("bad bech32 checksum")
    acc, bits, out = 0, 0, bytearray()
    for value in values[:-6]:
        acc = (acc << 5) | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if bits >= 5 or (acc << (8 - bits)) & 0xFF:
        raise ValueError("non-zero bech32 padding")
    return hrp, bytes(out)


def check_recipient(recipient: str) -> str:
    """Return the recipient if it is a well-formed age recipient, else raise InvalidInput."""
    recipient = recipient.strip()
    try:
        age = importlib.import_module("porchlight.age")
        parse = getattr(age, "parse_recipient", None)
    except ImportError:
        parse = None
    try:
        if parse is not None:
            parse(recipient)
            return recipient
        hrp, key = _bech32_decode(recipient)
    except Exception as error:
        raise InvalidInput(f"not a valid age recipient: {error}") from None
    if hrp == "age" and len(key) == 32:
        return recipient
    if hrp == "age1pq" and len(key) > 32:
        return recipient
    raise InvalidInput("not a valid age recipient: expected age1... or age1pq1...")
