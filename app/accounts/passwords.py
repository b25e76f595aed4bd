"""argon2id password hashing and the password strength rule."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.errors import InvalidInput

MIN_LENGTH = 12
# The most common long-enough passwords in public breach corpora; longer lists belong in a file
# if this ever needs to grow.
COMMON_PASSWORDS = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678901234",
        "qwertyuiopas",
        "password1234",
        "password12345",
        "passwordpassword",
        "qwerty123456",
        "iloveyou1234",
        "111111111111",
        "000000000000",
        "123123123123",
        "abc123abc123",
        "letmeinletmein",
        "welcome12345",
        "administrator",
        "correcthorsebatterystaple",
        "qwertyqwerty",
        "aaaaaaaaaaaa",
        "1q2w3e4r5t6y",
        "zaq12wsxcde3",
        "trustno1trustno1",
        "monkeymonkey",
        "dragondragon",
        "football1234",
        "baseball1234",
        "sunshine1234",
        "princess1234",
        "changemechangeme",
        "porchlight123",
        "porchlight1234",
        "neighbourhood",
        "neighborhood1",
    }
)


def make_hasher(time_cost: int, memory_kib: int) -> PasswordHasher:
    # argon2-cffi's PasswordHasher is argon2id by default.
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)


def check_strength(password: str, username: str) -> None:
    """Refuse short, common or user-name-derived passwords with a message saying which."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_LENGTH} characters")
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or len(set(lowered)) < 4:
        raise InvalidInput("password is too common or too repetitive; choose another")
    if username and username.lower() in lowered:
        raise InvalidInput("password must not contain the user name")


def verify(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
