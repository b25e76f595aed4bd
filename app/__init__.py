"""The Porchlight community server (FastAPI).

Layout (package by domain): `app/<domain>/{models,schemas,service,routes}.py` for `accounts`,
`agencies`, `devices`, `audit` (the log). Shared plumbing: `settings.Settings`, `db` (Base,
UTCDateTime, engines), `errors` (AppError and friends), `permissions` (roles -> named
permissions), `deps` (make_router, SessionDep, NowDep, SettingsDep, PrincipalDep, require),
`migrate` (Alembic in code), `main.create_app`.

Adding a route:
1. In `app/<domain>/routes.py`: `router = make_router(prefix=..., tags=[...])`; the endpoint
   takes `user: Annotated[User, Depends(require("perm:name"))]` (or `DeviceDep` from
   app.devices.routes for signed device calls), `session: SessionDep`, `now: NowDep`.
   Services take the session, flush, raise AppError subclasses, never commit; the route class
   commits once per request.
2. A new permission goes in `app/permissions.py` (PERMISSIONS and ROLE_PERMISSIONS).
3. Every state change calls `app.audit.service.append(session, actor, action, subject,
   details)`; document the action in docs/log-format.md.
4. Include the router in `app/main.py`, new models in `app/models.py`, then
   `app.migrate.new_revision("what changed", "0002")` writes the migration to review.
5. Add the route's rule to `tests/server/route_rules.py` (the role-by-route test fails until
   you do).
"""
