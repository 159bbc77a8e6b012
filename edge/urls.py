"""Stream URLs: which strings name one, and the same URL fit for logs and outputs, every credential in it hidden.

A URL is redacted where a Frame is named (edge/frames.py), so no consumer ever sees a credential.
"""

from __future__ import annotations

import re

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
_URL_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
# A host (name, IPv4 or [IPv6]) with an optional port: what follows the '@' that ends a URL's userinfo.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[\w.%~-]*)(:\d*)?")
# Query (and path) parameters whose values are credentials: a name holding one of these words, so password,
# api-key, access_token, X-Amz-Signature, client_secret, sessionid and a DVR's /user=admin_password=x all match.
_SECRET_NAME = r"([\w.-]*(?:pass|pwd|token|key|auth|sig|secret|session|cred|jwt)[\w.-]*)="
_SECRET_IN_PATH = re.compile(_SECRET_NAME + r"([^&;/]+)", re.IGNORECASE)
_SECRET_IN_QUERY = re.compile(_SECRET_NAME + r"([^&;]+)", re.IGNORECASE)
_OUR_FRAGMENT = re.compile(r"frame=\d+")  # the "#frame=N" the sources append to a source's name


def url_scheme(spec: str) -> str | None:
    """The scheme of a URL-shaped string ('rtsp', 'file', 'ftp' ...), or None."""
    m = _URL_RE.match(spec)
    return m.group(1) if m else None


def is_url(spec: str) -> bool:
    scheme = url_scheme(spec)
    return bool(scheme) and scheme.lower() in STREAM_SCHEMES


def redact(url: str) -> str:
    """A URL fit for logs, outputs and error messages, with every credential form replaced by ***:

    - userinfo, which is everything before the last '@' that is followed by a host (a password may hold '/', '@',
      '?' or '#'): rtsp://user:secret@host -> rtsp://user:***@host, rtsp://:secret@host -> rtsp://:***@host, a
      lone token (https://TOKEN@host) -> https://***@host;
    - query and path parameters named like a credential (password, token, key, auth, sig, secret, apikey,
      access_token, session...): ?password=x&res=640 -> ?password=***&res=640;
    - a fragment, except the '#frame=N' the sources append.

    It errs towards hiding too much: an e-mail address in the query reads as userinfo. Idempotent; text that is
    not a URL comes back as it was. (Not urllib.parse.urlsplit: it ends the authority at the first '/', so a
    password with a '/' in it would be read as the path and kept.)
    """
    m = _URL_RE.match(url)
    if not m:
        return url
    prefix, rest = url[: m.end()], url[m.end():]
    userinfo, rest = _split_userinfo(rest)
    rest, hash_mark, fragment = rest.partition("#")
    path, question, query = rest.partition("?")
    rest = _SECRET_IN_PATH.sub(r"\1=***", path) + question + _SECRET_IN_QUERY.sub(r"\1=***", query)
    out = prefix + (_redact_userinfo(userinfo) + "@" if userinfo is not None else "") + rest
    if hash_mark:
        out += "#" + (fragment if not fragment or _OUR_FRAGMENT.fullmatch(fragment) else "***")
    return out


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """(userinfo or None, the rest from the host on). The '@' is looked for before the query first, then anywhere
    (a password with '?' or '#' in it)."""
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    for text in (head, rest):
        for at in reversed([i for i, c in enumerate(text) if c == "@"]):
            host = re.split(r"[/?#]", rest[at + 1:], maxsplit=1)[0]
            if _HOST.fullmatch(host):
                return rest[:at], rest[at + 1:]
    return None, rest


def _redact_userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    return f"{user}:***" if colon else "***"


def redact_text(text: str) -> str:
    """Every URL inside a message (an exception's text, say) redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)
