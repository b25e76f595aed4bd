"""Server-rendered web pages for every role (Jinja2 templates in app/templates, CSS in app/static).

Pages are thin: each calls the domain services (`app.accounts.service`, `app.devices.service`,
...) inside the request's one transaction, exactly as the JSON routes do. Conventions:

* Routers come from `app.web.render.page_router()`, which marks the request as a page so
  errors render as HTML (`app.web.error_pages`): a browser that is not signed in is redirected
  to /login, a wrong role gets a 403 page, a script (no `text/html` in Accept) gets the status.
* Every form carries the session's CSRF token (`csrf_token` field), checked by
  `app.deps.PrincipalDep`; the two signed-out forms (login, accept invite) use a double-submit
  cookie (`app.web.render.check_form_csrf`).
* A failed form re-renders with the error beside the field that caused it (status 4xx), after
  rolling back anything the service did; success redirects (303) back to a page.
* Security headers (strict CSP, no framing, no referrer) come from `app.web.security`.
"""
