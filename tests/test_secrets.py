"""Secrets never show: API keys and Redis passwords, in every form, in reprs, ``.url``, errors and log records
of every logger at DEBUG (real clients against a real server and a real redis-server on loopback)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from urllib.parse import quote

import numpy as np
import pytest

from embedopt import CacheError, ConfigError, Embedder, ProviderError
from embedopt._secrets import redact_url
from embedopt.cache import RedisTier
from embedopt.providers.openai import OpenAIProvider
from embedopt.providers.voyage import VoyageProvider
from embedopt.semantic_cache import RedisSemanticBackend

from .api_server import hashed_model
from .redis_server import RedisServer


class _Everything(logging.Handler):
    """Keeps every record of every logger, formatted as a handler would print it (traceback included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.names.add(record.name)
        self.lines.append(self.format(record) + str(record.args) + str(record.__dict__.get("exc_text") or ""))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def every_log() -> Iterator[_Everything]:
    """The root logger and every logger that exists at DEBUG, one handler seeing all of them."""
    handler = _Everything()
    root = logging.getLogger()
    saved = {name: logger.level for name, logger in logging.Logger.manager.loggerDict.items()
             if isinstance(logger, logging.Logger)}
    root_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in saved:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(root_level)
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def _forms(secret: str, user: str = "") -> list[str]:
    """The ways a secret travels: as is, percent-encoded, a 12-character piece, inside HTTP Basic auth."""
    return [secret, quote(secret, safe=""), secret[2:14],
            base64.b64encode(f"{user}:{secret}".encode()).decode().rstrip("=")]


def _clean(text: str, secret: str, user: str = "") -> bool:
    return not any(form in text for form in _forms(secret, user))


def test_no_api_key_in_any_record_with_every_logger_at_debug(api_server, every_log):
    """Regression: the scrubber filtered the loggers openai used to use (httpx, httpcore.*), not the ones openai 3
    uses (httpx2, httpcore2.http11, ...), so DEBUG logs showed a key a server echoed in its headers. Now every
    record of every logger is scrubbed: a key sent, refused, echoed in the body and in a header never shows."""
    server = api_server(hashed_model(8), echo_key_header=True)
    secret = "sk-live-SECRET-0123456789-abcdefghij"
    for provider in (OpenAIProvider("m", api_key=secret, base_url=server.url, dim=8),
                     VoyageProvider("voyage-3", api_key=secret, base_url=server.url, dim=8)):
        with pytest.raises(ProviderError) as info:
            provider.embed(["hello"], "document")
        assert _clean(str(info.value) + repr(info.value) + repr(provider), secret)
    assert "httpx2" in every_log.names or "httpx" in every_log.names, every_log.names  # the client did log
    assert any(n.startswith(("httpcore2", "httpcore")) for n in every_log.names), every_log.names
    assert _clean(every_log.text, secret), [line for line in every_log.lines if "SECRET" in line]


def test_a_key_in_base_url_userinfo_never_shows(api_server, every_log):
    """Regression: a key in base_url's userinfo (http://user:KEY@host/v1) showed in the provider's repr, in
    httpx's INFO line for every request and, base64-encoded in the Basic auth a server echoed, in errors."""
    server = api_server(hashed_model(8))
    key = "userinfo-KEY-0123456789abcdef"
    url = server.url.replace("http://", f"http://proxyuser:{key}@")
    provider = OpenAIProvider("m", base_url=url, dim=8)
    with pytest.raises(ProviderError) as info:  # the test server wants a Bearer key: a 401 echoing what came
        provider.embed(["hello"], "document")
    shown = repr(provider) + str(info.value) + repr(Embedder(provider)) + every_log.text
    assert _clean(shown, key, "proxyuser"), shown
    assert "proxyuser:***@127.0.0.1" in repr(provider)


@pytest.mark.parametrize("password", ["pa#ss/wo?rd-0123", "plain-password-0123"])
def test_redis_password_in_the_query_or_percent_encoded_never_shows(tmp_path, every_log, password):
    """Regression: a password given as ?password=... showed in the tier's repr, .url and errors; one holding '#',
    '/' or '?' was cut by the URL parser, so its pieces showed as a host or a database in errors and logs."""
    server = RedisServer(tmp_path, password=password).start()
    try:
        urls = [f"redis://127.0.0.1:{server.port}/0?password={quote(password, safe='')}",
                f"redis://default:{quote(password, safe='')}@127.0.0.1:{server.port}/0"]
        for url in urls:
            tier = RedisTier(url)
            tier.set_many([("k", np.ones(4, dtype=np.float32))])
            assert tier.get_many(["k"])[0] is not None  # the password works
            shown = repr(tier) + tier.url + repr(RedisSemanticBackend(url))
            assert _clean(shown, password, "default"), shown
        server.kill()
        for url in urls:
            with pytest.raises(CacheError) as info:
                RedisTier(url, timeout=0.2).get_many(["k"])
            assert _clean(str(info.value) + repr(info.value), password, "default"), str(info.value)
        assert _clean(every_log.text, password, "default")
    finally:
        server.kill()


@pytest.mark.parametrize("password", ["pa#ss-0123456", "pa/ss-0123456", "pa?ss-0123456"])
def test_an_unencoded_password_that_a_parser_would_cut_is_refused_without_echo(password):
    """Regression: redis://:pa#ss@host/0 was parsed with 'pa' as the password and 'ss@host/0' as a fragment, so
    the rest of the password showed in .url and errors. Now it is refused, the message telling to encode it."""
    with pytest.raises(ConfigError, match="percent-encode") as info:
        RedisTier(f"redis://default:{password}@127.0.0.1:6379/0")
    assert password not in str(info.value) and password[3:] not in str(info.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://default:s3cret@h:6379/0", "redis://default:***@h:6379/0"),
    ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://h:6379/0?password=s3cret&db=1", "redis://h:6379/0?password=***&db=1"),
    ("rediss://u:p%23w%2Fd@h/0?ssl_cert_reqs=none", "rediss://u:***@h/0?ssl_cert_reqs=none"),
    ("http://user:KEY@host/v1?api_key=KEY2", "http://user:***@host/v1?api_key=***"),
    ("http://host/v1", "http://host/v1"),
])
def test_redact_url_hides_every_secret_part(url, shown):
    """What a redacted URL keeps (scheme, user, host, path, harmless options) and hides."""
    assert redact_url(url) == shown


def test_a_comma_in_a_redis_password_is_not_echoed_as_an_unknown_tier():
    """Regression: a cache spec is split at commas, so "redis://u:pa,ss-word-123@h/0" made a tier
    "ss-word-123@h/0" whose name the unknown-tier error echoed: the second half of the password."""
    from embedopt.specs import parse_cache

    with pytest.raises(ConfigError, match="%2C") as info:
        parse_cache("memory,redis://u:pa,ss-word-123@h:6379/0")
    assert "ss-word" not in str(info.value)


def test_a_secret_in_an_exception_or_in_arguments_that_do_not_format_is_scrubbed(every_log):
    """A traceback a handler prints, and the arguments of a log call that fails to format (which logging would
    print raw on stderr), are scrubbed too; a secret too short to scrub everywhere is left alone."""
    from embedopt._secrets import register

    register("exc-KEY-zyxwvutsrq-98765")
    register("tiny")
    log = logging.getLogger("some.library.nobody.filtered")
    try:
        raise RuntimeError("server said: exc-KEY-zyxwvutsrq-98765 is not valid")
    except RuntimeError:
        log.exception("call failed")
    log.debug("bad format %d", "exc-KEY-zyxwvutsrq-98765")
    log.info("a tiny word")
    assert _clean(every_log.text, "exc-KEY-zyxwvutsrq-98765")
    assert "call failed" in every_log.text and "RuntimeError: server said: *** is not valid" in every_log.text
    assert "arguments hidden" in every_log.text and "a tiny word" in every_log.text
