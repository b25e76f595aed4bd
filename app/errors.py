"""One error hierarchy: each error carries its HTTP status; one handler renders them all."""

from __future__ import annotations


class AppError(Exception):
    """An expected failure (4xx); `commit` keeps the transaction's work (a logged failed login)."""

    status_code = 400
    code = "bad_request"
    commit = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(AppError):
    status_code = 422
    code = "invalid_input"


class NotAuthenticated(AppError):
    status_code = 401
    code = "not_authenticated"


class NotPermitted(AppError):
    status_code = 403
    code = "not_permitted"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class TooManyAttempts(AppError):
    status_code = 429
    code = "too_many_attempts"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class LoginFailed(NotAuthenticated):
    """Wrong user name or password: the failed attempt and its log entry are committed."""

    code = "login_failed"
    commit = True
