"""jinja2 templates for login identities: sandboxed, and strict about unknown names."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

IDENTITY_VARIABLES = frozenset({"user", "local_part", "domain"})

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


@dataclass(frozen=True)
class TemplateUser:
    """What an identity template sees as ``user``."""

    name: str
    email: str | None
    display_name: str | None


class TemplateError(Exception):
    """A template could not be rendered for a user."""


def check_identity_template(source: str) -> str | None:
    """Return a problem with the template's text, or None when it compiles and only uses
    the known variables (``user``, ``local_part``, ``domain``)."""
    try:
        parsed = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    unknown = sorted(meta.find_undeclared_variables(parsed) - IDENTITY_VARIABLES)
    if unknown:
        return (
            f"unknown template variable {', '.join(unknown)} "
            f"(known: {', '.join(sorted(IDENTITY_VARIABLES))})"
        )
    return None


@lru_cache(maxsize=64)
def _compiled(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def render_identity(source: str, user: TemplateUser) -> str:
    """Render an identity template for one user.

    ``local_part`` and ``domain`` come from the user's e-mail address (split at the
    last '@'); they are undefined for a user without one, so a template that uses
    them fails for that user with a clear message.
    """
    context: dict[str, object] = {"user": user}
    if user.email is not None:
        local, _, domain = user.email.rpartition("@")
        context["local_part"] = local
        context["domain"] = domain
    try:
        rendered = _compiled(source).render(context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template for user {user.name!r}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template for user {user.name!r}: {exc}") from None
    rendered = rendered.strip()
    if not rendered:
        raise TemplateError(f"template for user {user.name!r} renders an empty identity")
    return rendered
