"""The portal: server-rendered pages for people (API.md "Web portal").

Each module is a group of pages; each page calls the same use cases as the
JSON API. `setup(app)` registers them, the static files and the template
environment. A page's errors are pages too (in the person's language, with
the status the API would answer), except a CSRF refusal, which is the API's
problem+json 403 `csrf-failed`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from telephony.domain.errors import CsrfFailed, ServiceError, TooManyRequests
from telephony.i18n import N_, speaking
from telephony.web.appkeys import CATALOGUE
from telephony.web.portal import account, people, receipts, records, render, staff
from telephony.web.problems import status_of

PortalHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TITLES = {
    400: N_("The request could not be read"),
    401: N_("Please sign in"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    409: N_("That cannot be done now"),
    413: N_("Too large"),
    422: N_("Some fields need attention"),
    429: N_("Too many attempts"),
    500: N_("Something went wrong"),
    503: N_("Busy, try again shortly"),
}


def _html_errors(handler: PortalHandler) -> PortalHandler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except CsrfFailed:
            raise  # problem+json from the middleware, as API.md names it
        except ServiceError as exc:
            status = status_of(exc)
            if status >= 500:
                raise
            response = _error_page(request, status, str(exc))
            if isinstance(exc, TooManyRequests):
                response.headers["Retry-After"] = str(exc.retry_after_s)
            return response
        except web.HTTPNotFound:
            return _error_page(request, 404, "")

    return wrapped


def _error_page(request: web.Request, status: int, detail: str) -> web.Response:
    with speaking(render.language_of(request)):
        title = request.app[CATALOGUE].gettext(TITLES.get(status, TITLES[400]))
    return render.page(request, "error.html", {"title": title, "detail": detail}, status=status)


ROUTES: list[tuple[str, str, PortalHandler]] = [
    ("GET", "/", people.home),
    ("GET", "/login", people.login_form),
    ("POST", "/login", people.login),
    ("GET", "/logout", people.logout_page),
    ("POST", "/logout", people.logout),
    ("GET", "/signup", people.signup_form),
    ("POST", "/signup", people.signup),
    ("GET", "/password-reset", people.reset_form),
    ("POST", "/password-reset", people.reset),
    ("GET", "/invitation", people.invitation_form),
    ("POST", "/invitation", people.accept_invitation),
    ("POST", "/language", people.switch_language),
    ("GET", "/policy", people.policy_page),
    *records.ROUTES,
    *receipts.ROUTES,
    *account.ROUTES,
    *staff.ROUTES,
]


def setup(app: web.Application) -> None:
    render.setup(app)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, _html_errors(handler))
    app.router.add_route("GET", "/static/{name}", render.asset)
