"""Secrets out of the AWS SDK's log records.

At DEBUG, botocore and aiobotocore log what iampool's AWS calls carry: the request parameters
(``ExternalId``), the signed request (``Authorization``, ``X-Amz-Security-Token``), SigV4's
canonical request and signature, and the response body (AssumeRole's ``SecretAccessKey`` and
``SessionToken``, Redshift's ``DbPassword``). :class:`SecretFilter`, on every logger of the SDK,
rewrites such a record in place before any handler sees it:

- **by shape**: the value of every field whose name says it is secret (``SecretAccessKey``,
  ``SessionToken``, ``X-Amz-Security-Token``, any ``*Password``, ``ExternalId``, ``Signature``,
  ``Authorization``, ...) becomes ``[REDACTED]``, written as XML (``<DbPassword>x</DbPassword>``),
  JSON or a Python repr (``"dbPassword": "x"``, ``'ExternalId': 'x'``, ``b'x'``), JSON-escaped
  (``\\"dbPassword\\": \\"x\\"``), a query or form parameter (``X-Amz-Signature=x``), URL-encoded
  (``%3CDbPassword%3E``, ``%22dbPassword%22%3A%22x``, ``%3D``) or a header line
  (``x-amz-security-token:x``, ``Signature:\\nx``);
- **a whole secret**: Secrets Manager's ``SecretString`` and ``SecretBinary`` hold a document
  (RDS's JSON, quoted again inside the response's JSON and again in a bytes repr), so
  everything from the field's name to the end of its line becomes ``[REDACTED]``, whatever the
  nesting of quotes and escapes;
- **by value**: during an AWS call iampool knows the secrets it sends (the signing credentials'
  secret key and session token, the external ID, see :func:`in_flight`); any occurrence of
  them, raw, URL-encoded or JSON-escaped, is replaced as well.

Everything else in the record stays as the SDK wrote it. A record that names no secret field
costs a lower-casing and a few substring searches; any record costs time linear in its length
(DESIGN invariant 13; how, by the expressions below): 64 KB of text built to be slow takes
milliseconds, not the tens of seconds a backtracking pattern took.

A logger's filters see only the records logged on that logger, not those its children
propagate, so the filter goes on each logger: every module of botocore and aiobotocore (created
ahead, so a module imported later finds it in place) and every logger under those names and
aiohttp's and urllib3's; :func:`install` adds it to the ones created since, and costs one
``len()`` when there are none. Handlers and the root logger are the application's and are not
touched: logging may be configured before or after iampool is imported, a forked child keeps the
filters and a spawned one installs them when it builds its AWS source.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import json
import logging
import os
import re
import string
import threading
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

__all__ = ["REDACTED", "SecretFilter", "in_flight", "install", "redact"]

REDACTED = "[REDACTED]"

_MODULES_OF = ("botocore", "aiobotocore")  # packages whose module loggers are created ahead
_PREFIXES = frozenset({"botocore", "aiobotocore", "aiohttp", "urllib3"})
# Secrets shorter than this are matched by shape only: replacing a short string wherever it
# occurs would garble records (an ExternalId may be 2 characters).
_SHORTEST_VALUE = 8

# Lower-case words one of which every secret field name contains: a record without any of them
# (and without a secret in flight) is left alone after one lower-casing.
_HINTS = ("secret", "passw", "token", "signature", "external", "authoriz")
_KEYWORD = r"(?:secret|passw(?:or)?d|token|signature|external_?id|authorization)"
_IDENTIFIER_CHARACTERS = string.ascii_letters + string.digits + "_-"
_IDENTIFIER = frozenset(_IDENTIFIER_CHARACTERS)
# Names that match but hold no secret: pagination and idempotency tokens, signature versions.
_PUBLIC_NAMES = (
    "nexttoken",
    "continuationtoken",
    "paginationtoken",
    "clienttoken",
    "idempotencytoken",
    "signatureversion",
    "signaturemethod",
)
_SHORTEST_PUBLIC = min(len(name) for name in _PUBLIC_NAMES)
# The expressions run on the lower-cased text (ten times faster than re.IGNORECASE), hex escapes
# included (%3c), whose positions are the text's: ASCII-only lower-casing when full lower-casing
# would change the length (a few non-ASCII letters do).
#
# Linear time (DESIGN invariant 13), by construction:
# - every match attempt starts at a fixed word (a keyword, "authorization") or at "<" / "%3c",
#   and what it reads before it can fail is bounded (an XML name: at most _LONGEST_NAME
#   characters, so the back-reference-free name check compares at most that much) or is taken
#   whole: a field's name is matched from its first keyword to the end of its identifier, with
#   the rest of the field optional, so the match succeeds there and the search resumes after it,
#   past every other keyword of that identifier (an attempt per keyword would re-read the
#   identifier each time: the quadratic time of "tokentokentoken...");
# - every repetition is a single character class, or an unrolled loop ``a*(?:b a*)*`` whose
#   ``a`` and ``b`` begin with different characters, so each prefix matches one way only and a
#   failing attempt backtracks at most once over what it read;
# - an optional part is written ``(?:x|)``, and an unrolled loop ``a*(?:b a*(?:b a*)*|)``: the
#   same language and the same match as ``x?`` and ``a*(?:b a*)*``, but sre tries a branch by
#   its first character (when that is a literal or a class: ``\\+["']`` rather than
#   ``\\*["']``), while it enters a repeated group (``x?`` is one) at a cost of its own each
#   time; a field every 10 bytes met six of them per field (a third of the filter's time);
# - an XML value is not matched at all: it runs to the next "<" or "%3c" (a search that stops at
#   the next opening tag at the latest), then the closing tag is compared as text.
# tests/unit/test_redaction_time.py checks the time on adversarial shapes up to 1 MB;
# benchmarks/bench_redaction.py prints it.
_LONGEST_NAME = 128
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# A quote, perhaps backslash-escaped (JSON in JSON) or encoded.
_QUOTE = r"(?:[\"']|\\+[\"']|%2[27])"
_SPACES = r"[ \t+]*"  # "+" and "%20": spaces of URL-encoded text
_SPACE = rf"{_SPACES}(?:%20{_SPACES}(?:%20{_SPACES})*|)"
_NEWLINE = r"(?:\n|\r\n|\\(?:r\\|)n|%(?:0d%|)0a)"  # raw, JSON-escaped or URL-encoded
_SEPARATOR = rf"{_SPACE}(?:[:=]|%3[ad]){_SPACE}"
# A value may start on the next line ("Signature:\n<hex>"), unquoted only: a quoted string on
# the next line is more likely the name of the next field (which must not become a value).
_NEXT_LINE = rf"(?:{_NEWLINE}{_SPACE}|)"
# A quoted value ends at a quote (escaped or encoded), a backslash before a quote, or a line end.
_QUOTED_TEXT = r"[^\"'\\\r\n%]*"
_QUOTED_ESCAPE = r"(?:%(?!2[27])|\\(?![\\\"'\r\n]))"
_QUOTED_VALUE = (
    rf"{_QUOTED_TEXT}(?:{_QUOTED_ESCAPE}{_QUOTED_TEXT}(?:{_QUOTED_ESCAPE}{_QUOTED_TEXT})*|)"
)
# An unquoted value ends at white space, a quote, a delimiter or an encoded one.
_UNQUOTED_TEXT = r"[^\s\"'\\&<>,;(){}\[\]%]"
_UNQUOTED_GOES_ON = r"[^\s\"'\\&<>,;(){}\[\]]"  # the text, or "%": an escape may follow
_UNQUOTED_ESCAPE = r"%(?!0[ad]|2[0267]|3[ce]|5c)"
_UNQUOTED_VALUE = (
    rf"(?:{_UNQUOTED_TEXT}|{_UNQUOTED_ESCAPE}){_UNQUOTED_TEXT}*"
    rf"(?:{_UNQUOTED_ESCAPE}{_UNQUOTED_TEXT}*(?:{_UNQUOTED_ESCAPE}{_UNQUOTED_TEXT}*)*|)"
)
# <DbPassword>x</DbPassword>, %3CDbPassword%3Ex%3C%2FDbPassword%3E: the opening tag; the value
# runs to the next tag, which must close this one.
_XML_OPEN = re.compile(
    rf"(?:<|%3c)(?=[a-z0-9_-]{{0,{_LONGEST_NAME - 13}}}?{_KEYWORD})"  # 13: the longest keyword
    rf"(?P<name>[a-z0-9_-]{{1,{_LONGEST_NAME}}})(?:>|%3e)"
)
_XML_TAG = re.compile(r"<|%3c")
_XML_CLOSE = re.compile(r"(?:<|%3c)(?:/|%2f)")
# An unquoted Authorization header runs to the end of its line ("Bearer x", "AWS4-HMAC-SHA256
# Credential=..., Signature=x").
_AUTHORIZATION = re.compile(
    rf"(?P<name>authorization)(?:{_QUOTE}|){_SEPARATOR}{_NEXT_LINE}(?!b?{_QUOTE}|\s)"
    r"(?P<value>(?:[^\"'\\\r\n%]|%(?!0[ad]|2[27]))[^\"'\\\r\n%]*"
    r"(?:%(?!0[ad]|2[27])[^\"'\\\r\n%]*(?:%(?!0[ad]|2[27])[^\"'\\\r\n%]*)*|))"
)


# "dbPassword": "x", 'ExternalId': 'x', b'x', \"x\", %22x%22, X-Amz-Signature=x, name:x
def _field_value(group: str) -> str:
    return (
        rf"(?:b?{_QUOTE}(?P<quoted{group}>{_QUOTED_VALUE})"
        rf"|{_NEXT_LINE}(?P<value{group}>{_UNQUOTED_VALUE}))"
    )


# Three ways to a value, each a special case of the next, taken first because it is more
# frequent and quicker to read. The first: a name whose identifier is shorter than any public
# name (its value needs no check, see _without_fields), ":" or "=" right after it, perhaps one
# space and no more spacing (which the third reads whole before a value), and a value of plain
# characters, whole, that no quote, "b" and quote, or escape starts or continues. The second:
# the same ":" or "=" and any value. The third: the whole form. Where a way fails, the next
# reads that separator (and a plain value) again: at most three times, still linear.
_FIELD = re.compile(
    rf"(?P<name>{_KEYWORD}[a-z0-9_-]*)"
    rf"(?:[:=](?<![a-z0-9_-]{{{_SHORTEST_PUBLIC}}}[:=])"  # an identifier too short to be public
    rf"(?: |)(?![ \t+]|%20|b{_QUOTE})(?P<plain>{_UNQUOTED_TEXT}+)(?!{_UNQUOTED_GOES_ON})"
    rf"|[:=](?: |)(?![ \t+]|%20){_field_value('')}"
    rf"|(?:{_QUOTE}|){_SEPARATOR}{_field_value('_after')}|)"
)
# Secrets Manager's secret fields: their value is redacted to the end of the line.
_DOCUMENT = re.compile(r"secret(?:string|binary)")
_PUBLIC_ENDINGS = ("token", "version", "method")  # of every public name: a cheap first check

_in_flight: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "iampool_secrets_in_flight", default=()
)


def _public(low: str, start: int, end: int) -> bool:
    """Whether the name ``low[start:end]``, read from its identifier's start, is a public one
    (a pagination token, a signature version)."""
    if not low.endswith(_PUBLIC_ENDINGS, start, end):
        return False
    if end - start < _SHORTEST_PUBLIC and (start == 0 or low[start - 1] not in _IDENTIFIER):
        return False  # "token" alone
    window = max(0, start - 64)  # the identifier's start, at most 64 characters back
    begin = window + len(low[window:start].rstrip(_IDENTIFIER_CHARACTERS))
    return low[begin:end].replace("-", "").replace("_", "").endswith(_PUBLIC_NAMES)


def _xml_values(low: str) -> Iterator[tuple[int, int]]:
    done = 0
    for opening in _XML_OPEN.finditer(low):
        start, name = opening.end(), opening["name"]
        if opening.start() < done or _public(low, *opening.span("name")):
            continue
        tag = _XML_TAG.search(low, start)  # at the next opening tag at the latest
        if tag is None:
            return
        close = _XML_CLOSE.match(low, tag.start())
        if (
            close is not None
            and low.startswith(name, close.end())
            and low.startswith((">", "%3e"), close.end() + len(name))
        ):
            yield start, tag.start()
            done = tag.start()


def _without_fields(pattern: re.Pattern[str], text: str, low: str) -> str:
    """``text`` with the values of ``pattern``'s fields (found in ``low``) replaced. The value
    of a public field is searched too, once (not that of a public field inside it): it may
    have run on into the next line's field, and reading each such value once more keeps the
    time linear.

    ``pattern``'s group 1 is the name, the others values, each ending its match; a value in
    group 2 is never empty, and its name never a public one.
    """
    # Once per field: a field every 10 bytes is the worst case, where each step here counts.
    pieces: list[str] = []
    keep = pieces.append
    kept = 0
    for match in pattern.finditer(low):
        value = match.lastindex or 1  # the value's group; 1, the name's: a name passed over whole
        if value == 2:  # the quickest way: a value, of a name that cannot be public
            value_start, value_end = match.span(2)
            keep(text[kept:value_start])
            keep(REDACTED)
            kept = value_end
            continue
        if value == 1:
            continue
        value_start, value_end = match.span(value)
        if value_start == value_end:
            continue
        name_start = match.start()
        if (  # a name shorter than any public one, at the start of its identifier
            value_start - name_start < _SHORTEST_PUBLIC
            and (name_start == 0 or low[name_start - 1] not in _IDENTIFIER)
        ) or not _public(low, name_start, match.end(1)):
            keep(text[kept:value_start])
            keep(REDACTED)
            kept = value_end
            continue
        for inner in pattern.finditer(low, value_start, value_end):
            value = inner.lastindex or 1
            if value == 1:
                continue
            inner_start, inner_end = inner.span(value)
            if inner_start != inner_end and not _public(low, *inner.span(1)):
                keep(text[kept:inner_start])
                keep(REDACTED)
                kept = inner_end
    if not pieces:
        return text
    keep(text[kept:])
    return "".join(pieces)


def _document_values(low: str) -> Iterator[tuple[int, int]]:
    """From each ``SecretString`` / ``SecretBinary`` name to the end of its line (once per
    line: linear)."""
    done = 0
    for match in _DOCUMENT.finditer(low):
        if match.start() < done:
            continue
        end = low.find("\n", match.end())
        done = len(low) if end < 0 else end
        if done > match.end():
            yield match.end(), done


def _replaced(text: str, spans: Iterator[tuple[int, int]]) -> str:
    pieces: list[str] = []
    kept = 0
    for start, end in spans:
        pieces += [text[kept:start], REDACTED]
        kept = end
    if not pieces:
        return text
    pieces.append(text[kept:])
    return "".join(pieces)


def _lowered(text: str) -> str:
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


def redact(text: str) -> str:
    """``text`` with the values of secret fields, and the secrets in flight, replaced."""
    for form in _in_flight.get():  # first: a shape could cut a secret and leave a piece
        if form in text:
            text = text.replace(form, REDACTED)
    if not any(hint in text.lower() for hint in _HINTS):
        return text
    low = _lowered(text)
    if "secretstring" in low or "secretbinary" in low:  # Secrets Manager's documents
        text = _replaced(text, _document_values(low))
        low = _lowered(text)
    if "<" in low or "%3c" in low:  # str's search is faster than the pattern's
        text = _replaced(text, _xml_values(low))
        low = _lowered(text)
    if "authorization" in low:
        text = _without_fields(_AUTHORIZATION, text, low)
        low = _lowered(text)
    return _without_fields(_FIELD, text, low)


def _forms(secret: str) -> list[str]:
    """``secret`` raw, URL-encoded (both ways) and JSON-escaped."""
    return list(
        dict.fromkeys(
            [
                secret,
                quote(secret, safe=""),
                quote(secret),
                quote_plus(secret),
                json.dumps(secret)[1:-1],
            ]
        )
    )


@contextlib.contextmanager
def in_flight(*secrets: str | None) -> Iterator[None]:
    """Within the block (and the tasks it starts), SDK records lose ``secrets`` in any form.

    For what an AWS call sends: its credentials' secret key and session token, an external ID.
    ``None`` and secrets shorter than 8 characters are skipped (left to the shapes).
    """
    forms = [
        form
        for secret in secrets
        if secret is not None and len(secret) >= _SHORTEST_VALUE
        for form in _forms(secret)
    ]
    if not forms:
        yield
        return
    known = _in_flight.get()
    # Longest first: a form that contains another is replaced whole.
    token = _in_flight.set(tuple(sorted({*known, *forms}, key=len, reverse=True)))
    try:
        yield
    finally:
        _in_flight.reset(token)


_TRACEBACKS = logging.Formatter()


class SecretFilter(logging.Filter):
    """Rewrites a record's message, traceback and stack without secrets; never drops one.

    A rewritten record carries the final text in ``msg`` (``args`` emptied); a traceback that
    held a secret is kept as text (``exc_text``) and its exception object dropped, so that no
    handler formats it again from the original.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit: what logging would print, redacted
            message = f"{record.msg!s} % {record.args!r}"
            record.msg, record.args = redact(message), ()
        else:
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or _TRACEBACKS.formatException(record.exc_info)
            cleaned = redact(text)
            if cleaned != text:
                record.exc_info, record.exc_text = None, cleaned
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


FILTER = SecretFilter()
_lock = threading.Lock()
_swept = -1  # how many loggers there were at the last sweep; -1: none yet


def install() -> None:
    """Put :data:`FILTER` on every logger of the SDK; cheap when no logger was created since."""
    global _swept
    loggers = logging.Logger.manager.loggerDict
    if len(loggers) == _swept:
        return
    with _lock:
        if _swept < 0:
            for name in sorted(_PREFIXES) + _module_names():
                logging.getLogger(name)
        for name, logger in list(loggers.items()):
            if (
                isinstance(logger, logging.Logger)
                and name.partition(".")[0] in _PREFIXES
                and FILTER not in logger.filters
            ):
                logger.addFilter(FILTER)
        _swept = len(loggers)


def _module_names() -> list[str]:
    """Every module of botocore and aiobotocore, found without importing any."""
    names = []
    for package in _MODULES_OF:
        spec = importlib.util.find_spec(package)
        for top in (spec.submodule_search_locations or []) if spec else []:
            for folder, subfolders, files in os.walk(top):
                subfolders[:] = [
                    sub
                    for sub in subfolders
                    if sub not in {"data", "__pycache__"} and "." not in sub
                ]
                relative = os.path.relpath(folder, top)
                prefix = ".".join([package, *([] if relative == "." else relative.split(os.sep))])
                for file in files:
                    if file.endswith(".py"):
                        module = file[:-3]
                        names.append(prefix if module == "__init__" else f"{prefix}.{module}")
    return names
