"""The login pages: server-rendered, accessible HTML without JavaScript, every value escaped.

Each page is a labelled form or a short message in ``<main>``, errors are announced (``role="alert"``),
and the responses are never cached, never framed and send no ``Referer`` (a callback URL holds a code).
"""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse

__all__ = ["LOGIN_PATH", "PAGE_HEADERS", "error_page", "login_page", "message_page"]

LOGIN_PATH = "/login"
"""Where the email question is answered (``POST``), and asked (``GET``) when nothing else asks it."""

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;line-height:1.5}"
    "label,input,button{display:block;font-size:1rem}input{width:100%;padding:.5rem;margin:.25rem 0 1rem}"
    "button{padding:.5rem 1rem}[role=alert]{border-left:4px solid #b00020;padding:.5rem 1rem;background:#fdecee}"
)


def _page(title: str, body: str, status: int) -> HTMLResponse:
    html = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)} · Entente</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n<h1>{escape(title)}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def login_page(
    *, next_path: str, email: str = "", error: str | None = None, signed_in_as: str | None = None, status: int = 200
) -> HTMLResponse:
    """The email question of home-realm discovery (``POST /login``)."""
    parts = []
    if signed_in_as is not None:
        parts.append(
            f'<p>You are signed in as <strong>{escape(signed_in_as)}</strong>. <a href="/logout">Sign out</a></p>'
        )
    if error is not None:
        parts.append(f'<p role="alert" id="login-error">{escape(error)}</p>')
    described = ' aria-describedby="login-error" aria-invalid="true"' if error is not None else ""
    parts.append(
        f'<form method="post" action="{LOGIN_PATH}">\n'
        '<label for="email">Your work email address</label>\n'
        f'<input id="email" name="email" type="email" autocomplete="email" required value="{escape(email)}"'
        f"{described}>\n"
        f'<input type="hidden" name="next" value="{escape(next_path)}">\n'
        '<button type="submit">Continue</button>\n</form>\n'
        "<p>You will sign in at your organisation's own identity provider.</p>"
    )
    return _page("Sign in", "\n".join(parts), status)


def error_page(detail: str, *, status: int = 400, title: str = "Sign-in failed") -> HTMLResponse:
    """A refusal: what happened, and the way back."""
    body = f'<p role="alert">{escape(detail)}</p>\n<p><a href="/login">Start again</a></p>'
    return _page(title, body, status)


def message_page(title: str, text: str) -> HTMLResponse:
    """A plain informational page (e.g. after signing out)."""
    return _page(title, f'<p>{escape(text)}</p>\n<p><a href="/login">Sign in</a></p>', 200)
