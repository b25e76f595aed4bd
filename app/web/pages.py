"""Every page router, in one list for `app.main.create_app` to include."""

from __future__ import annotations

from fastapi import APIRouter

from app.web import (
    account_pages,
    admin_pages,
    auditor_pages,
    public_pages,
    requester_pages,
    resident_pages,
    reviewer_pages,
    static_files,
)


def routers() -> list[APIRouter]:
    return [
        static_files.router,
        public_pages.router,
        account_pages.router,
        resident_pages.router,
        reviewer_pages.router,
        requester_pages.router,
        auditor_pages.router,
        admin_pages.router,
    ]
