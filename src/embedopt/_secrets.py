"""Secrets (API keys, passwords in URLs) never reach a log record, a repr or an error message.

Every secret embedopt is handed is registered here. From the first one on, every log record this process makes,
from any logger (the HTTP clients' ``httpx``, ``httpx2``, ``httpcore2.http11``, ``openai``, ``voyage``, ``redis``,
the root logger, loggers that do not exist yet), is scrubbed when it is made: its message, its formatted
exception and its stack, in every form a secret travels in (as given, percent-encoded, and inside the base64 of an
HTTP Basic ``user:password``). Scrubbing at record creation (a wrapped :func:`logging.setLogRecordFactory`)
instead of filters on named loggers is what makes it complete: a filter on ``httpx`` does not see the records of
``httpx2`` or of a child logger such as ``httpcore2.http11``.

Secrets shorter than :data:`MIN_LENGTH` characters are redacted where embedopt shows a URL or a key itself, but
not scrubbed from every log line of the process (replacing a four-letter word everywhere would garble the logs).
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, unquote

__all__ = ["MIN_LENGTH", "redact", "redact_url", "register", "register_url", "scrub", "secrets_of", "url_secrets"]

#: Shortest secret scrubbed from every log record.
MIN_LENGTH = 6
_MASK = "***"

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()
"""Every registered form of every secret, longest first (replaced atomically, read without the lock)."""
_installed = False


def redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (and any 12+ character piece of it) replaced by ``***``."""
    if not secret:
        return text
    text = text.replace(secret, _MASK)
    for size in (24, 16, 12):
        for start in range(0, max(0, len(secret) - size + 1), 4):
            piece = secret[start:start + size]
            if len(piece) == size and piece in text:
                text = text.replace(piece, _MASK)
    return text


def scrub(text: str, *extra: str | None) -> str:
    """``text`` without any registered secret, nor any of ``extra`` (however short)."""
    for secret in (*_secrets, *(e for e in extra if e)):
        if secret in text or len(secret) >= 12:
            text = redact(text, secret)
    return text


def _forms(secret: str, user: str | None) -> set[str]:
    forms = {secret, quote(secret, safe=""), unquote(secret)}
    for u in {user or "", unquote(user or "")}:
        for s in (secret, unquote(secret)):
            forms.add(base64.b64encode(f"{u}:{s}".encode()).decode().rstrip("="))
    return {f for f in forms if len(f) >= MIN_LENGTH}


def register(secret: str | None, *, user: str | None = None) -> None:
    """Scrub ``secret`` from every log record made from now on (and its percent-encoded and Basic-auth forms;
    ``user`` is the user name that goes with a password)."""
    global _secrets, _installed
    if not secret or len(secret) < MIN_LENGTH:
        return
    new = _forms(secret, user)
    with _lock:
        if new <= set(_secrets):
            return
        _secrets = tuple(sorted(set(_secrets) | new, key=len, reverse=True))
        if not _installed:
            logging.setLogRecordFactory(_scrubbing(logging.getLogRecordFactory()))
            _installed = True


def _scrubbing(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if _secrets:
            _scrub_record(record)
        return record

    return factory


def _scrub_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not format: keep the (scrubbed) template, drop the arguments
        record.msg, record.args = scrub(str(record.msg)) + " [arguments hidden: they did not format]", None
        return
    clean = scrub(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        clean = scrub(text)
        if clean != text:  # handlers format exc_info themselves: leave them only the scrubbed text
            record.exc_text, record.exc_info = clean, None
    elif record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)


# ------------------------------------------------------------------------------------------------------ URLs
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:[^=&;#]*(?:pass|secret|token|key|auth)[^=&;#]*)=)([^&;#]*)")


def _split(url: str) -> tuple[str, str, str] | None:
    """(``scheme://``, userinfo, the rest) of a URL with userinfo, else ``None``. The userinfo runs to the last
    ``@`` (a password may hold ``@``, ``/``, ``?`` or ``#`` that a URL parser would cut it at)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return None
    at = rest.rfind("@")
    return scheme + sep, rest[:at], rest[at + 1:]


def url_secrets(url: str) -> list[tuple[str, str | None]]:
    """The secrets in a URL, as (secret, user): the password of its userinfo (the whole userinfo when it has no
    ``:``) and the values of query parameters such as ``password=``, ``token=``, ``api_key=``."""
    found: list[tuple[str, str | None]] = []
    split = _split(url)
    if split is not None:
        user, colon, password = split[1].partition(":")
        found.append((password, user) if colon else (user, None))
    for match in _SECRET_QUERY.finditer(url if split is None else split[0] + split[2]):
        if match.group(2):
            found.append((match.group(2), None))
    return [(s, u) for s, u in found if s]


def redact_url(url: str) -> str:
    """The URL with its password (all of the userinfo after the user name) and secret query values as ``***``."""
    split = _split(url)
    if split is not None:
        scheme, userinfo, rest = split
        user, colon, _ = userinfo.partition(":")
        url = f"{scheme}{user}:{_MASK}@{rest}" if colon else f"{scheme}{_MASK}@{rest}"
    return _SECRET_QUERY.sub(lambda m: m.group(1) + _MASK if m.group(2) else m.group(0), url)


def register_url(url: str) -> None:
    """:func:`register` every secret of a URL."""
    for secret, user in url_secrets(url):
        register(secret, user=user)


def secrets_of(url: str) -> Iterable[str]:
    """The secrets of a URL, for :func:`scrub`'s ``extra`` (however short)."""
    return [s for s, _ in url_secrets(url)]
