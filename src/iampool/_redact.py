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
import sys
import threading
from collections.abc import Callable, Iterator
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
# Names that match but hold no secret: pagination and idempotency tokens, signature versions,
# written as one word or with "_" or "-" between the two words.
_PUBLIC_NAMES = (
    ("next", "token"),
    ("continuation", "token"),
    ("pagination", "token"),
    ("client", "token"),
    ("idempotency", "token"),
    ("signature", "version"),
    ("signature", "method"),
)
# The expression below runs on the lower-cased text (ten times faster than re.IGNORECASE), hex
# escapes included (%3c), whose positions are the text's: ASCII-only lower-casing when full
# lower-casing would change the length (a few non-ASCII letters do).
#
# Linear time (DESIGN invariant 13), by construction:
# - every match attempt starts at a keyword or at "<" / "%3c" and reads a bounded stretch (an
#   XML name: at most _LONGEST_NAME characters, and the closing tag's name, which a
#   back-reference compares, as long), or a stretch that no other attempt reads again:
#   - a field's name, from its first keyword to the end of its identifier, with the rest of
#     the field optional: the match succeeds there and the search resumes after it, past every
#     other keyword of that identifier (an attempt per keyword would read the identifier again
#     each time: the quadratic time of "tokentokentoken...");
#   - a field's value, read by at most three ways (the quick one, a header's line, the whole
#     form), each reading it at most twice (a way that fails at the value's end gives back
#     what it read), then replaced: the search resumes after it;
#   - an XML value, which runs to the next "<" (raw XML) or the first "%3c" (URL-encoded),
#     where the next attempt of its kind can start at the earliest;
# - every repetition is a single character class, or an unrolled loop ``a*(?:b a*)*`` whose
#   ``a`` and ``b`` begin with different characters, so each prefix matches one way only;
# - an optional part is written ``(?:x|)``, and an unrolled loop ``a*(?:b a*(?:b a*)*|)``: the
#   same language and the same match as ``x?`` and ``a*(?:b a*)*``, but sre tries a branch by
#   its first character (when that is a literal or a class: ``\\+["']`` rather than
#   ``\\*["']``), while it enters a repeated group (``x?`` is one) at a cost of its own;
# - the loops of a value and of spacing are possessive (``*+``) and the URL-encoded XML value
#   an atomic group, where Python has them (3.11): no way back into them could end the value
#   elsewhere (or start it: no value starts with spacing), and sre then keeps nothing per turn
#   for a way back, which a plain loop does (a frame and a copy of the groups' marks per turn:
#   a value of 1 MB of "%" took 487 MB and 350 ms that way, 1.1 MB and 39 ms now). Python
#   3.10 has neither: there the same expression without them matches the same, linear in time
#   but with that memory per turn.
# tests/unit/test_redaction_time.py checks the time on adversarial shapes up to 1 MB;
# benchmarks/bench_redaction.py prints it.
_LONGEST_NAME = 128
_POSSESSIVE = sys.version_info >= (3, 11)  # possessive loops and atomic groups: Python 3.11
_ONCE = "+" if _POSSESSIVE else ""  # what makes a loop possessive, where there are any
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_NAME_CHARACTERS = "[a-z0-9_-]"
# A quote, perhaps backslash-escaped (JSON in JSON) or encoded.
_QUOTE = r"(?:[\"']|\\+[\"']|%2[27])"
# Spacing: " ", tab, and "+" and "%20", the spaces of URL-encoded text. Its loop is possessive
# too: no value starts with any of them (a way back into spacing finds no value).
_SPACES = r"[ \t+]*"
_SPACE = rf"{_SPACES}(?:%20{_SPACES}(?:%20{_SPACES})*{_ONCE}|)"
_NEWLINE = r"(?:\n|\r\n|\\(?:r\\|)n|%(?:0d%|)0a)"  # raw, JSON-escaped or URL-encoded
_SEPARATOR = rf"{_SPACE}(?:[:=]|%3[ad]){_SPACE}"
# A value may start on the next line ("Signature:\n<hex>"), unquoted only: a quoted string on
# the next line is more likely the name of the next field (which must not become a value).
_NEXT_LINE = rf"(?:{_NEWLINE}{_SPACE}|)"
# A quoted value ends at a quote (escaped or encoded), a backslash before a quote, or a line end.
_QUOTED_TEXT = r"[^\"'\\\r\n%]"
_QUOTED_ESCAPE = r"(?:%(?!2[27])|\\(?![\\\"'\r\n]))"
# An unquoted value ends at white space, a quote, a delimiter or an encoded one; it starts with
# no spacing ("+").
_UNQUOTED_START = r"[^\s\"'\\&<>,;(){}\[\]%+]"
_UNQUOTED_TEXT = r"[^\s\"'\\&<>,;(){}\[\]%]"
_UNQUOTED_GOES_ON = r"[^\s\"'\\&<>,;(){}\[\]]"  # the text, or "%": an escape may follow
_UNQUOTED_ESCAPE = r"%(?!0[ad]|2[0267]|3[ce]|5c)"
# What starts a value read the quick way: no more spacing ("+" is some), no "b" (of b'x').
_PLAIN_START = r"[^\s\"'\\&<>,;(){}\[\]%+b]"
# An Authorization header's value runs to the end of its line.
_LINE_TEXT = r"[^\"'\\\r\n%]"
_LINE_ESCAPE = r"%(?!0[ad]|2[27])"


def _run(text: str, escape: str, *, empty: bool = False, start: str | None = None) -> str:
    """Text of ``text`` (a character class) and ``escape`` (which starts with a character
    ``text`` excludes), at least one character unless ``empty`` (the first of ``start``, when
    given, a class within ``text``), as an unrolled, possessive loop: each string matches one
    way only."""
    first = f"{text}*" if empty else f"(?:{start or text}|{escape}){text}*"
    return rf"{first}(?:{escape}{text}*(?:{escape}{text}*)*{_ONCE}|)"


def _not_public(after: str = "", *, once: bool = True, nor: tuple[str, ...] = ()) -> str:
    """Where a name ends (or ``after``, an expression of fixed width, past its end): it is not
    a public one, nor does it end with a word of ``nor``.

    Fixed-width look-behinds in a tree of branches that exclude each other: a name that ends
    with "token" is told from a public one by the four letters before that word
    ("sessiontoken" from "paginationtoken": three comparisons), by the whole public name only
    when those are a public name's; most other names by their last two letters (one); the
    rest by their last word. In a look-ahead (``once``), which is atomic, the tree is left as
    soon as one branch passes; else, when what follows fails, sre tries the other branches
    too, each failing at its first comparison.
    """
    endings = sorted({last for _, last in _PUBLIC_NAMES}, key=lambda last: last != "token")
    ways = []
    for ending in endings:
        firsts = [first for first, last in _PUBLIC_NAMES if last == ending]
        fours = f"(?:{'|'.join(sorted({first[-4:] for first in firsts}))})"
        last = ending + after
        exactly = "".join(f"(?<!{first}{last})(?<!{first}[_-]{last})" for first in firsts)
        ways.append(
            f"(?<={last})(?:(?<!{fours}{last})(?<!{fours}[_-]{last})"
            f"|(?:(?<={fours}{last})|(?<={fours}[_-]{last})){exactly})"
        )
    words = [*endings, *nor]
    ends = f"[{''.join(sorted({w[-2] for w in words}))}][{''.join(sorted({w[-1] for w in words}))}]"
    ways[1:1] = [
        f"(?<!{ends}{after})",  # no public name nor word of ``nor`` ends so
        f"(?<={ends}{after})" + "".join(f"(?<!{word}{after})" for word in words),
    ]
    return f"(?={'|'.join(ways)})" if once else f"(?:{'|'.join(ways)})"


_NOT_PUBLIC = _not_public()
# One character after the name, and no header ("...authorization": its value is a line); not
# in a look-ahead: what follows it rarely fails.
_NOT_PUBLIC_NOR_HEADER_BEFORE_ONE = _not_public(".", once=False, nor=("authorization",))


def _element(opening: str, closing: str, value: Callable[[str], str], way: str) -> str:
    """An XML element of a secret field, its tags written with ``opening`` and ``closing``
    (expressions for "<" and ">"); ``value`` gives, for a group's name, the expression of the
    value in that group and the next tag's opening. Groups named for ``way``."""
    # A keyword within the name's first characters (13: the longest keyword's length); the
    # public names are looked for on the closing tag, once the element is known to be whole.
    return (
        rf"{opening}(?={_NAME_CHARACTERS}{{0,{_LONGEST_NAME - 13}}}?{_KEYWORD})"
        rf"(?P<tag_{way}>{_NAME_CHARACTERS}{{1,{_LONGEST_NAME}}}{_ONCE}){closing}"
        rf"{value(f'xml_{way}')}(?:/|%2f)(?P=tag_{way}){_NOT_PUBLIC}{closing}"
    )


def _raw_value(group: str) -> str:
    """To the next "<" (raw XML)."""
    return rf"(?P<{group}>[^<]*{_ONCE})<"


def _encoded_value(group: str) -> str:
    """To the first "%3c" (URL-encoded XML), which must come before any "<"."""
    if _POSSESSIVE:  # atomic: the first "%3c" found by a lazy look, which sre skips to in C
        return rf"(?>(?P<{group}>[^<]*?)%3c)"
    return rf"(?P<{group}>{_run('[^<%]', '%(?!3c)', empty=True)})%3c"


def _field(way: str) -> str:
    """After a keyword: the rest of a field's name and its value, groups named for ``way``.

    A name that ends with "authorization" is a header whose value runs to the end of its line
    (``line``), unless quoted; the quick way refuses such names.
    """
    return (
        rf"{_NAME_CHARACTERS}*(?:"
        rf"[:=]{_NOT_PUBLIC_NOR_HEADER_BEFORE_ONE} ?"
        rf"(?P<plain_{way}>{_PLAIN_START}{_UNQUOTED_TEXT}*)(?!{_UNQUOTED_GOES_ON})"
        rf"|(?<=authorization)(?:{_QUOTE}|){_SEPARATOR}{_NEXT_LINE}(?!b?{_QUOTE}|\s|\+|%20)"
        rf"(?P<line_{way}>{_run(_LINE_TEXT, _LINE_ESCAPE)})"
        rf"|(?=[:=\"'\\+ \t]|%(?:2[027]|3[ad])){_NOT_PUBLIC}(?:{_QUOTE}|){_SEPARATOR}"
        rf"(?:b?{_QUOTE}(?P<quoted_{way}>{_run(_QUOTED_TEXT, _QUOTED_ESCAPE)})"
        rf"|{_NEXT_LINE}"
        rf"(?P<value_{way}>{_run(_UNQUOTED_TEXT, _UNQUOTED_ESCAPE, start=_UNQUOTED_START)}))|)"
    )


# One expression, one pass: each field is one match. It is spelled out as one alternative per
# first character, so that sre skips ahead in C to the next character that can start one and
# tries only the alternatives that start with it (with a group or a look-behind first it tries
# every alternative at every such character: five times slower on text without fields). The
# ways, by the group that ends a match (each named for its alternative):
#
# - ``xml``: <DbPassword>x</DbPassword>, %3CDbPassword%3Ex%3C%2FDbPassword%3E: the value runs
#   to the next tag, which must close this one (in the same encoding); when it does not, the
#   element does not match and its text is searched like any other;
# - ``line``: a header whose name ends with "authorization", unquoted, to the end of its line
#   ("Bearer x", "AWS4-HMAC-SHA256 Credential=..., Signature=x");
# - ``plain``: "token: x", "token=x&": ":" or "=" right after the name, at most one space, and
#   a value of plain characters that no quote or escape starts, continues or ends (the quick
#   way for the densest fields);
# - ``quoted`` / ``value``: any field: "dbPassword": "x", 'ExternalId': 'x', b'x', \"x\",
#   %22x%22, X-Amz-Signature=x, name:x, and a value on the next line (unquoted only).
#
# A name is read from its first keyword to the end of its identifier whatever follows: with no
# value after it, or when it is a public name, the match is the name alone (no group), and the
# search goes on after it. The order: at each turn of a loop sre copies the marks of the groups
# numbered up to the one it is in, so the loops of the densest fields come first.
_SCAN = re.compile(
    "|".join(
        [
            _element("%3c", "%3e", _encoded_value, "encoded"),
            f"token{_field('t')}",
            f"passw(?:or)?d{_field('p')}",
            f"s(?:ecret|ignature){_field('s')}",
            f"external_?id{_field('e')}",
            f"authorization{_field('a')}",
            _element("<", ">", _raw_value, "raw"),
        ]
    )
)
# For the group that ended a match (0: none, a name alone), the group whose span is replaced:
# every group is a value but an element's tag (a group added for anything else must be named
# here; a unit test checks the names).
_REPLACED = tuple(
    0 if name.startswith("tag_") else index
    for index, name in enumerate(["", *sorted(_SCAN.groupindex, key=_SCAN.groupindex.__getitem__)])
)
# Secrets Manager's secret fields: their value is redacted to the end of the line.
_DOCUMENT = re.compile(r"secret(?:string|binary)")

_in_flight: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "iampool_secrets_in_flight", default=()
)


def _without_fields(text: str, low: str) -> str:
    """``text`` with the values of the fields :data:`_SCAN` finds in ``low`` replaced."""
    # Once per field, and a field every 8 bytes is the worst case: the least work per match.
    pieces: list[str] = []
    keep = pieces.append
    kept = 0
    for match in _SCAN.finditer(low):
        if group := _REPLACED[match.lastindex or 0]:
            keep(text[kept : match.start(group)])
            kept = match.end(group)
    if not pieces:
        return text
    keep(text[kept:])
    return REDACTED.join(pieces)


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
    low = _lowered(text)
    if not any(hint in low for hint in _HINTS):
        return text
    if "secretstring" in low or "secretbinary" in low:  # Secrets Manager's documents
        text = _replaced(text, _document_values(low))
        low = _lowered(text)
    return _without_fields(text, low)


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
