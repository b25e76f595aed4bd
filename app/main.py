"""The app factory: settings, database, error rendering, body limits, and every domain's routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime, timedelta

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from app import api_docs
from app import scheduler as request_scheduler
from app.accounts import routes as accounts_routes
from app.accounts.passwords import make_hasher
from app.agencies import routes as agencies_routes
from app.audit import integrator as log_integrator
from app.body_limit import BodyLimitMiddleware
from app.clipstore import LocalClipStore
from app.db import make_engine, make_sessionmaker, utcnow
from app.deps import TransactionRoute
from app.devices import routes as devices_routes
from app.errors import AppError
from app.log import checkpoints as log_checkpoints
from app.log import keys as log_keys
from app.log import routes as log_routes
from app.policy import routes as policy_routes
from app.requests import device_routes as request_device_routes
from app.requests import poll_fast
from app.requests import routes as requests_routes
from app.settings import Settings, prepare_data_dir
from app.web import pages as web_pages
from app.web.error_pages import error_page, is_page_request
from app.web.security import SecurityHeadersMiddleware


def _render_app_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, AppError)
    if is_page_request(request):
        return error_page(request, error.status_code, error.message, error)
    return JSONResponse(
        {"error": error.code, "message": error.message}, status_code=error.status_code
    )


def _render_validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        problems.append(f"{where or 'body'}: {item.get('msg', 'invalid')}")
    if is_page_request(request):
        return error_page(request, 422, "; ".join(problems) or "invalid request", error)
    return JSONResponse(
        {
            "error": "invalid_input",
            "message": "; ".join(problems) or "invalid request",
            "fields": problems,
        },
        status_code=422,
    )


def _render_http_error(request: Request, error: Exception) -> Response:
    # Unknown paths (404) and wrong methods (405) get the same body shape as AppError.
    assert isinstance(error, StarletteHTTPException)
    if is_page_request(request):
        return error_page(request, error.status_code, str(error.detail), error)
    return JSONResponse(
        {"error": "http_error", "message": str(error.detail)},
        status_code=error.status_code,
        headers=error.headers,
    )


class PorchlightApp(FastAPI):
    """The FastAPI app with its two hot paths in front of everything else.

    Every camera polls every few seconds, and a full log verification reads thousands of entry
    bundles: the steady device poll (app/requests/poll_fast.py) and the log's tile, bundle and
    proof reads (app.log.routes.LogReads) are answered before Starlette's own middleware
    stack (its error, exception and body-limit layers and ours) and before routing; anything
    they do not answer goes on through that stack unchanged. The security headers wrap the
    whole app, hot paths and error pages included.
    """

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return SecurityHeadersMiddleware(poll_fast.DevicePolls(log_routes.LogReads(stack)))


def create_app(
    settings: Settings | None = None, clock: Callable[[], datetime] | None = None
) -> FastAPI:
    """Build the app; the database must already be migrated (`porchlight server migrate`)."""
    settings = settings or Settings()
    # Before the engine opens the SQLite file: it and the data directory are made private.
    prepare_data_dir(settings)
    engine = make_engine(settings.database_url)
    # Made at the first start (0600 in the data dir); only its verifier key is ever shown.
    log_signer = log_keys.load_or_create(settings)

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        # Before serving: a fresh log gets its first checkpoint, a grown one catches up (and
        # entries committed but not integrated before a crash get their index).
        await log_checkpoints.publish_safely(application.state.sessionmaker, log_signer)
        integrator = asyncio.create_task(
            log_integrator.integrate_periodically(
                application.state.sessionmaker, settings.log_integrate_interval_seconds
            )
        )
        publisher = asyncio.create_task(
            log_checkpoints.publish_periodically(
                application.state.sessionmaker,
                log_signer,
                settings.log_checkpoint_interval_seconds,
            )
        )
        # Ask deadlines, request deadlines, access-window purges (app/scheduler.py).
        deadlines = request_scheduler.Scheduler(
            application.state.sessionmaker,
            application.state.clip_store,
            application.state.clock,
            nonce_max_age=2 * timedelta(seconds=settings.device_clock_skew_seconds),
        )
        deadlines.start()
        try:
            yield
        finally:
            deadlines.stop()
            for task in (publisher, integrator):
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            # What this process's requests appended gets its index before it exits.
            await log_integrator.integrate_safely(application.state.sessionmaker, wait=True)

    app = PorchlightApp(
        title="Porchlight",
        version="0.1.0",
        description="Community server: warrant-and-consent footage requests and a verifiable log.",
        lifespan=lifespan,
        # FastAPI's explorer pages load their scripts from a public CDN; app/api_docs.py
        # serves the explorer from this server instead.
        docs_url=None,
        redoc_url=None,
    )
    # Routes added straight on the app also get one transaction per request.
    app.router.route_class = TransactionRoute
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.log_signer = log_signer
    # Sessions carry the log signer; a request-lifecycle append publishes a checkpoint at commit.
    log_checkpoints.install_publish_hook(
        app.state.sessionmaker, log_signer, size_multiple=settings.log_checkpoint_size_multiple
    )
    app.state.clock = clock or utcnow
    app.state.clip_store = LocalClipStore(settings.data_dir / "clips")
    app.state.password_hasher = make_hasher(settings.argon2_time_cost, settings.argon2_memory_kib)
    app.add_exception_handler(AppError, _render_app_error)
    app.add_exception_handler(RequestValidationError, _render_validation_error)
    app.add_exception_handler(StarletteHTTPException, _render_http_error)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness and database reachability."""
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return {"status": "ok"}

    for router in (
        api_docs.router,
        accounts_routes.router,
        agencies_routes.router,
        devices_routes.router,
        log_routes.log_router,
        log_routes.api_router,
        policy_routes.router,
        requests_routes.router,
        request_device_routes.router,
    ):
        app.include_router(router)
    for router in web_pages.routers():
        app.include_router(router)
    return app
