"""Clean raw documents before tokenizer training / pretraining, and report what changed.

Steps, in order: Unicode normalization -> HTML tags/entities -> PII redaction -> whitespace -> lowercase
-> length filter -> exact dedup. Every step is optional (:class:`CleanConfig`); :class:`CleaningReport`
counts what each one did. PII redaction is on by default: every kind in :data:`PII_KINDS` becomes a typed
placeholder (:data:`PII_PLACEHOLDERS`, e.g. ``<email>``), so text keeps its meaning ("call <phone>").
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import html
import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

UNICODE_FORMS = ("NFC", "NFKC")
PII_KINDS = ("email", "phone", "url", "id_number", "credit_card", "ip_address", "mac_address")
# bumped whenever redaction output changes (2: typed <placeholders>, cards, IPs, MACs, Chinese formats), so a
# cache of cleaned text can tell that it was made under other rules
PII_RULES_VERSION = 2
PII_PLACEHOLDERS = {
    "email": "<email>",
    "phone": "<phone>",
    "url": "<url>",
    "id_number": "<id>",  # Chinese resident ID (18 and 15 digits), US SSN
    "credit_card": "<card>",
    "ip_address": "<ip>",
    "mac_address": "<mac>",
}

# Only real HTML element names count as tags, so "<unk>", "<3" or "a<b" survive ("s" left out: "<s>" = BOS).
_HTML_TAGS = (
    "a abbr address area article aside audio b base bdi bdo big blockquote body br button canvas caption "
    "center cite code col colgroup data dd del details dfn dialog div dl dt em embed fieldset figcaption "
    "figure font footer form h1 h2 h3 h4 h5 h6 head header hr html i iframe img input ins kbd label legend "
    "li link main map mark math meta nav noscript object ol optgroup option output p param picture pre q rp "
    "rt ruby samp script section select small source span strike strong style sub summary sup svg table "
    "tbody td template textarea tfoot th thead time title tr track tt u ul var video wbr"
    " ref references nowiki"  # MediaWiki leftovers
).split()
# A bare "<name>" is a tag only for common formatting elements: SMS text has placeholders like "<TIME>".
_BARE_TAGS = (
    "a b big blockquote center div em font h1 h2 h3 h4 h5 h6 i li ol p pre small span strong sub sup tt u ul"
)
_ALL = "|".join(sorted(_HTML_TAGS, key=len, reverse=True))
_BARE = "|".join(sorted(_BARE_TAGS.split(), key=len, reverse=True))
_ATTRS = r"""(?:\s(?:[^<>"']|"[^"]*"|'[^']*')*|\s*/)"""  # attributes and/or a self-closing slash
# line-breaking tags become "\n"; other tags (closing, with attributes, or bare formatting) and comments go
_BREAK_TAG = re.compile(r"</?br(?=[\s/>])[^<>]*>|</p\s*>", re.IGNORECASE)
_TAG = re.compile(
    rf"<!--.*?-->|</(?:{_ALL})\s*>|<(?:{_ALL}){_ATTRS}>|<(?:{_BARE})>", re.IGNORECASE | re.DOTALL
)
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")

_NEWLINES = re.compile(r"\r\n?")
_HSPACE = re.compile(r"[^\S\n]+")  # any whitespace except newline
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass
class CleanConfig:
    """What :func:`clean_texts` does; defaults suit raw web/review text for LM pretraining."""

    unicode_form: str | None = "NFKC"  # "NFC", "NFKC" (also folds full-width forms) or None
    strip_html: bool = True
    normalize_whitespace: bool = True
    dedup: bool = True
    lowercase: bool = False
    redact_pii: bool = True  # typed placeholders, see PII_PLACEHOLDERS; a corpus may turn it off
    min_chars: int = 1

    def validate(self) -> CleanConfig:
        """Raise ValueError on values that would silently do the wrong thing; returns self for chaining."""
        if self.unicode_form is not None and self.unicode_form not in UNICODE_FORMS:
            raise ValueError(
                f"CleanConfig.unicode_form must be one of {UNICODE_FORMS} or None, got {self.unicode_form!r}"
            )
        for name in ("strip_html", "normalize_whitespace", "dedup", "lowercase", "redact_pii"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"CleanConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.min_chars, bool) or not isinstance(self.min_chars, int) or self.min_chars < 0:
            raise ValueError(f"CleanConfig.min_chars must be an integer >= 0, got {self.min_chars!r}")
        return self


@dataclass
class CleaningReport:
    """Counts of what cleaning did; add reports of several shards with :meth:`merge`."""

    docs_in: int = 0
    docs_out: int = 0
    empty_dropped: int = 0
    short_dropped: int = 0
    duplicates_dropped: int = 0
    html_tags_removed: int = 0
    html_entities_unescaped: int = 0
    redactions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_KINDS, 0))
    chars_in: int = 0
    chars_out: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def merge(self, other: CleaningReport) -> CleaningReport:
        """Add ``other``'s counts into this report (in place) and return self."""
        for f in dataclasses.fields(self):
            if f.name == "redactions":
                for kind, n in other.redactions.items():
                    self.redactions[kind] = self.redactions.get(kind, 0) + n
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def summary(self) -> str:
        """A small two-column table for logs."""
        kept = f"{self.docs_out / self.docs_in:.1%}" if self.docs_in else "-"
        rows = [
            ("documents in", f"{self.docs_in:,}"),
            ("documents out", f"{self.docs_out:,} ({kept})"),
            ("  empty dropped", f"{self.empty_dropped:,}"),
            ("  too short dropped", f"{self.short_dropped:,}"),
            ("  duplicates dropped", f"{self.duplicates_dropped:,}"),
            ("html tags removed", f"{self.html_tags_removed:,}"),
            ("html entities unescaped", f"{self.html_entities_unescaped:,}"),
            *((f"redacted {kind}", f"{n:,}") for kind, n in self.redactions.items()),
            ("characters in", f"{self.chars_in:,}"),
            ("characters out", f"{self.chars_out:,}"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value:>}" for name, value in rows)


def _strip_html(text: str, report: CleaningReport) -> str:
    if "<" not in text and "&" not in text:  # fast path: most documents have no markup
        return text
    text, n_breaks = _BREAK_TAG.subn("\n", text)
    text, n_tags = _TAG.subn("", text)
    n_entities = 0
    if "&" in text:

        def unescape(m: re.Match[str]) -> str:
            nonlocal n_entities
            out = html.unescape(m.group(0))
            n_entities += out != m.group(0)  # unknown names like "&foo;" stay as written
            return out

        text = _ENTITY.sub(unescape, text)
        if n_entities and "<" in text:  # markup that was itself escaped, e.g. "&lt;br /&gt;"
            text, more_breaks = _BREAK_TAG.subn("\n", text)
            text, more_tags = _TAG.subn("", text)
            n_breaks, n_tags = n_breaks + more_breaks, n_tags + more_tags
    report.html_tags_removed += n_breaks + n_tags
    report.html_entities_unescaped += n_entities
    return text


# ----------------------------------------------------------------------------------------------- PII
# Regexes plus validators, no third-party library: phonenumbers' text matcher is pure Python and far too
# slow for the ~300M characters of a pretraining mix on two cores (and its validity check rejects the
# fictional 555 numbers people write), python-stdnum's checks that matter here (Luhn, GB 11643, SSN
# ranges) are a few lines each, and Presidio/scrubadub need spaCy or NLTK models downloaded at run time.
# The standard library's ipaddress validates IPv6.
#
# Matching runs on a same-length copy of the text with full-width forms, NBSP-like spaces and Unicode
# dashes folded to ASCII ("１３８１２３４５６７８", "138–1234–5678"); spans found there replace the original
# characters. Each detector runs only when a cheap test says it can match ("@", "://", a run of 7+ digit
# characters, two colons close together), so ordinary prose costs a few substring searches per document.
#
# What survives on purpose: years, dates, prices and counts (no separator pattern or digit count of a
# phone, card or ID); card-length numbers without a valid Luhn checksum and issuer prefix (ISBN-13s,
# database timestamps); 18-digit IDs without a valid GB 11643 check digit; bare 9-digit numbers unless an
# "SSN"/"social security" keyword precedes them (unseparated 9-digit byte sizes such as 536870912 fill
# technical docs); dotted quads whose four numbers are all below 10 (version and section numbers such as
# 7.3.6.2 or 2.1.2.3 -- and with them the public resolvers 8.8.8.8 / 1.1.1.1, which identify no one) or
# that follow "v"/"version"/"版本"; loopback, unspecified and netmask-like addresses; bare domains without
# a path ("Amazon.com"); dotted version strings with a number above 255.

_LATIN = "\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0370-\u03ff\u0400-\u04ff"  # accented Latin, Greek, Cyrillic
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"  # ideographs and Hangul (IDN labels only)
_IDN_TLDS = "中国|中國|公司|网络|網絡|在线|香港|台湾|台灣|新加坡|рф|укр|бел|срб|қаз|한국|닷컴"
# folded for matching: full-width digits, letters and the symbols of phone numbers and addresses (not the
# full-width CJK punctuation "，：！？", which never is part of one), NBSP-like spaces, Unicode dashes
_FOLD = {chr(c): chr(c - 0xFEE0) for c in (0xFF08, 0xFF09, 0xFF0B, 0xFF0D, 0xFF0E, 0xFF3F, *range(0xFF10, 0xFF1A),
                                            *range(0xFF20, 0xFF3B), *range(0xFF41, 0xFF5B))}
_FOLD.update(dict.fromkeys("\u00a0\u2007\u2009\u202f\u3000", " "))
_FOLD.update(dict.fromkeys("\u2010\u2011\u2012\u2013\u2212", "-"))
_FOLDABLE = re.compile(f"[{''.join(sorted(_FOLD))}]")
_DOMAIN = f"A-Za-z0-9{_LATIN}{_CJK}"

# URLs with a scheme or "www.": ASCII (and accented/Cyrillic) characters, so a link glued to Chinese text
# stops where the Chinese starts; a CJK host needs a CJK top-level domain. Trailing punctuation is given back.
_URL_CHARS = f"A-Za-z0-9\\-._~:/?#\\[\\]@!$&'()*+,;=%{_LATIN}"
_URL = re.compile(
    rf"(?<![A-Za-z0-9.@])(?:[A-Za-z][A-Za-z0-9+.\-]{{1,15}}://|www\d{{0,3}}\.)"
    rf"(?:(?:[{_DOMAIN}\-]+\.)+(?:{_IDN_TLDS})[{_URL_CHARS}]*|[{_URL_CHARS}]+)",
    re.IGNORECASE,
)
_URL_TRAILING = ".,;:!?)]}'\""
# scheme-less URLs: a host under a common top-level domain followed by a path, query or port
# ("example.com/about", "bit.ly/x"); a bare domain ("Amazon.com") is a name, not a link, and stays
_TLDS = (
    "com|org|net|edu|gov|mil|int|info|biz|io|co|ai|app|dev|me|tv|cc|ly|us|uk|cn|de|fr|jp|ru|in|au|ca|br|"
    "it|es|nl|se|ch|kr|tw|hk|eu|xyz|top|site|online|tech|gl|gg|be|to"
)
_BARE_URL_GATE = re.compile(rf"\.(?:{_TLDS})(?::[0-9]{{2,5}})?[/?#]", re.IGNORECASE)
_BARE_URL = re.compile(
    rf"(?<![A-Za-z0-9.@/:_\-])(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{{0,61}}[A-Za-z0-9])?\.)+(?:{_TLDS})"
    rf"(?::[0-9]{{2,5}})?[/?#][{_URL_CHARS}]*",
    re.IGNORECASE,
)
# e-mail: ASCII or accented/Greek/Cyrillic local part (not CJK: Chinese text runs into it without a
# space), an internationalized domain (CJK labels need a CJK TLD or an ASCII one)
_EMAIL = re.compile(
    rf"(?<![A-Za-z0-9._%+\-{_LATIN}])[A-Za-z0-9_%+\-{_LATIN}](?:\.?[A-Za-z0-9_%+\-{_LATIN}]){{0,63}}@"
    rf"(?:[{_DOMAIN}](?:[{_DOMAIN}\-]{{0,62}})?\.)+"
    rf"(?:{_IDN_TLDS}|xn--[A-Za-z0-9\-]{{2,59}}|[A-Za-z{_LATIN}]{{2,63}})(?![A-Za-z0-9_\-{_LATIN}])"
)
# MAC: six hex pairs with ":" or "-" (one separator throughout) or Cisco's three dotted quads of hex
_MAC_GATE = re.compile(r"[:\-][0-9A-Fa-f]{2}[:\-][0-9A-Fa-f]{2}[:\-]")  # no alternation: fast scan
_CISCO_MAC_GATE = re.compile(r"\.[0-9A-Fa-f]{4}\.")
_MAC = re.compile(
    r"(?<![0-9A-Za-z:.\-])(?:[0-9A-Fa-f]{2}([:\-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})(?![0-9A-Za-z:\-]|\.[0-9A-Za-z])"
)
# IPv6: candidates around two colons that are close together, validated by ipaddress
_IPV6_GATE = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z:.])(?:[0-9A-Fa-f]{1,4}|:)?(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:(?<=:)[0-9]{1,3}(?:\.[0-9]{1,3}){3})?(?:%[0-9A-Za-z_.]+)?(?![0-9A-Za-z:]|\.[0-9])"
)

# Numbers. A run of 7+ digit-ish characters is the gate; each detector then runs in a window around it.
_NUM_RUN = re.compile(r"[0-9][0-9().+ \-]{5,}[0-9]")
_START = r"(?<![0-9A-Za-z])(?<![0-9][.,])"  # not glued to letters or digits, not the decimals of a number
_END = r"(?![0-9A-Za-z]|[.,/\-][0-9]|\.[A-Za-z])"  # not glued to more digits / a file suffix
_CN_ID18 = re.compile(
    _START + r"([1-9][0-9]{5})[ \-]?((?:18|19|20)[0-9]{2})[ \-]?([01][0-9][0-3][0-9])[ \-]?"
    r"([0-9]{3}[0-9Xx])(?![0-9A-Za-z])"
)
_CN_ID15 = re.compile(_START + r"([1-9][0-9]{5})[ \-]?([0-9]{6})[ \-]?[0-9]{3}" + _END)
_SSN = re.compile(
    _START + r"(?<!-)(?!000|666|9)[0-9]{3}(?P<sep>[ \-]?)(?!00)[0-9]{2}(?P=sep)(?!0000)[0-9]{4}" + _END
)
# the keyword must come right before the number: nothing but non-digits (at most 20) in between
_SSN_CONTEXT = re.compile(r"(?:(?i:ssn|ss#|social security|soc\.? ?sec)|社会安全|社會安全|社会保障)[^0-9]{0,20}$")
_CARD = re.compile(
    _START + r"(?<![.\-])(?:[0-9]{13,19}|[0-9]{4}(?P<sep>[ .\-])[0-9]{3,6}(?:(?P=sep)[0-9]{1,6}){1,3})" + _END
)
_IPV4 = re.compile(r"(?<![0-9A-Za-z.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9A-Za-z]|\.[0-9])")
_VERSION_CONTEXT = re.compile(r"(?i:\bv|\bver\.?|\bversion|\brelease)\s*$|版本\s*$")
_CN_MOBILE = re.compile(
    _START + r"(?:(?:\+|00)86[ \-]?|\(\+?86\)[ \-]?|86[ \-])?"
    r"1[3-9][0-9](?P<sep>[ \-]?)[0-9]{4}(?P=sep)[0-9]{4}(?![0-9])"
)
_CN_LANDLINE = re.compile(  # area code 010, 02x or 0xxx, written apart from the 7-8 digit local number
    _START + r"(?:(?:\+|00)86[ \-]?(?:\(0?(?:10|2[0-9]|[3-9][0-9]{2})\)|0?(?:10|2[0-9]|[3-9][0-9]{2}))"
    r"[ \-]?|\(0(?:10|2[0-9]|[3-9][0-9]{2})\)[ \-]?|0(?:10|2[0-9]|[3-9][0-9]{2})[ \-])"
    r"[2-9][0-9]{2,3}[ \-]?[0-9]{4}(?:-[0-9]{1,4})?(?![0-9])"
)
_INTL_PHONE = re.compile(  # needs the "+" prefix
    r"(?<![A-Za-z0-9+])\+[1-9][0-9]{0,2}[ .\-]?(?:\([0-9]{1,4}\)[ .\-]?)?[0-9]{1,4}(?:[ .\-]?[0-9]{2,5}){1,5}"
    + _END
)
_US_PHONE = re.compile(  # (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567, 713/853-1555, 5551234567
    _START + r"(?<![/+\-])(?:1[ .\-]?)?(?:\([2-9][0-9]{2}\)(?:[ .\-]| {1,3})?[0-9]{3}[ .\-]?[0-9]{4}"
    r"|[2-9][0-9]{2}[ .\-/][0-9]{3}[ .\-][0-9]{4}|[2-9][0-9]{9})" + _END
)
_LAST_GROUP = re.compile(r"[ .\-]?[0-9]+$")
_PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65 71 81 82 91".split()
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_QUANTITY_SUFFIX = frozenset("股元个人次年月日天字位倍条台件张万亿")  # "2186775548股" counts shares


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit() or c in "Xx")


def _valid_date(year: int, month: int, day: int) -> bool:
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return True


def cn_id_checksum_ok(number: str) -> bool:
    """GB 11643-1999 check digit (ISO 7064 MOD 11-2) of an 18-character Chinese resident ID."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(c) * w for c, w in zip(number[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == number[17].upper()


def luhn_ok(number: str) -> bool:
    """The Luhn (mod 10) checksum of a digit string."""
    total = 0
    for i, c in enumerate(reversed(number)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_number_ok(number: str) -> bool:
    """13-19 digits, a valid Luhn checksum and a length that the issuer prefix (IIN) allows."""
    n = len(number)
    if not (13 <= n <= 19 and number.isdigit() and luhn_ok(number)):
        return False
    p2, p3, p4 = int(number[:2]), int(number[:3]), int(number[:4])
    if number[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720 or 2200 <= p4 <= 2204:  # Mastercard, Mir
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if 3528 <= p4 <= 3589:  # JCB
        return n >= 16
    if p2 in (36, 38, 39) or 300 <= p3 <= 305:  # Diners Club
        return n >= 14
    if number[0] == "6" or p2 in (50, 56, 57, 58):  # UnionPay, Discover, Maestro, RuPay
        return n >= 13
    return False


def _check_cn_id18(m: re.Match[str], norm: str) -> tuple[int, int] | None:
    region, year, mmdd, tail = m.groups()
    ok = (region[:2] in _PROVINCES and _valid_date(int(year), int(mmdd[:2]), int(mmdd[2:]))
          and cn_id_checksum_ok(region + year + mmdd + tail))
    return m.span() if ok else None


def _check_cn_id15(m: re.Match[str], norm: str) -> tuple[int, int] | None:
    region, birth = m.group(1), m.group(2)
    ok = region[:2] in _PROVINCES and _valid_date(1900 + int(birth[:2]), int(birth[2:4]), int(birth[4:]))
    return m.span() if ok else None


def _check_ssn(m: re.Match[str], norm: str) -> tuple[int, int] | None:
    if m.group("sep"):
        return m.span()
    # unseparated: only after a keyword, since bare 9-digit numbers are mostly sizes and counts
    return m.span() if _SSN_CONTEXT.search(norm, max(0, m.start() - 60), m.start()) else None


def _check_card(m: re.Match[str], norm: str) -> tuple[int, int] | None:
    return m.span() if card_number_ok(_digits(m.group())) else None


def _check_ipv4(m: re.Match[str], norm: str) -> tuple[int, int] | None:
    octets = [int(x) for x in m.group().split(".")]
    if max(octets) > 255 or max(octets) < 10 or octets[0] in (0, 127, 255):
        return None  # a version/section number, loopback, unspecified or netmask
    if _VERSION_CONTEXT.search(norm, max(0, m.start() - 10), m.start()):
        return None
    return m.span()


def _check_phone(m: re.Match[str], norm: str) -> tuple[int, int] | None:
    return m.span()


def _check_intl_phone(m: re.Match[str], norm: str) -> tuple[int, int] | None:
    number = m.group()
    while sum(c.isdigit() for c in number) > 15:  # E.164 max: give back trailing groups ("... 0958 2019")
        tail = _LAST_GROUP.search(number)
        if tail is None:
            return None
        number = number[: tail.start()]
    if not 8 <= sum(c.isdigit() for c in number) <= 15:  # "+999.9999" is a number, not a phone
        return None
    return m.start(), m.start() + len(number)


def _check_us_phone(m: re.Match[str], norm: str) -> tuple[int, int] | None:
    number = m.group()
    if number.isdigit():  # unseparated: exactly 10 digits, and not a number that is something else
        value = int(number)
        if (len(number) != 10 or number.endswith("0000") or len(set(number)) == 1
                or any(v & (v - 1) == 0 for v in (value - 1, value, value + 1))  # 2**31 - 1, 2**33...
                or "ISBN" in norm[max(0, m.start() - 12) : m.start()].upper()
                or norm[m.end() : m.end() + 1] in _QUANTITY_SUFFIX):
            return None
    return m.span()


_NUMERIC_DETECTORS = (  # in priority order: a span claimed by one is not looked at by the next
    (_CN_ID18, _check_cn_id18, "id_number"),
    (_CN_ID15, _check_cn_id15, "id_number"),
    (_SSN, _check_ssn, "id_number"),
    (_CARD, _check_card, "credit_card"),
    (_IPV4, _check_ipv4, "ip_address"),
    (_CN_MOBILE, _check_phone, "phone"),
    (_CN_LANDLINE, _check_phone, "phone"),
    (_INTL_PHONE, _check_intl_phone, "phone"),
    (_US_PHONE, _check_us_phone, "phone"),
)
_RUN_SEPARATORS = "().+ -"


def _free(spans: list[tuple[int, int, str]], start: int, end: int) -> bool:
    """No claimed span (sorted by start) overlaps [start, end)."""
    i = bisect.bisect_left(spans, (start,))
    if i < len(spans) and spans[i][0] < end:
        return False
    return not (i > 0 and spans[i - 1][1] > start)


def _claim(spans: list[tuple[int, int, str]], found: Iterable[tuple[int, int, str]]) -> list[tuple[int, int]]:
    new = []
    for start, end, kind in found:
        if end > start and _free(spans, start, end):
            bisect.insort(spans, (start, end, kind))
            new.append((start, end))
    return new


def _mask(norm: str, new: list[tuple[int, int]]) -> str:
    """Blank claimed spans (same length) so later detectors neither match inside them nor see them as digits."""
    if not new:
        return norm
    parts, pos = [], 0
    for start, end in sorted(new):
        parts += [norm[pos:start], "\x00" * (end - start)]
        pos = end
    parts.append(norm[pos:])
    return "".join(parts)


def _fold_char(m: re.Match[str]) -> str:
    return _FOLD[m.group()]


def _valid_ipv6(candidate: str) -> bool:
    address = candidate.split("%", 1)[0]
    groups = [g for g in address.split(":") if g]
    # two groups or more ("::2" is a Python slice), a digit ("a::b" is code) and one group that only an
    # address has: four characters or a hex letter ("243:256::81/64" is a ratio table)
    if len(groups) < 2 or not any(c.isdigit() for c in address):
        return False
    if not any(len(g) == 4 or "." in g or any(c in "abcdefABCDEF" for c in g) for g in groups):
        return False
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified)


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """Sorted, non-overlapping ``(start, end, kind)`` spans of personal data in ``text`` (kinds: PII_KINDS)."""
    # a same-length copy with foldable characters folded (a callback per character: they are sparse)
    norm = _FOLDABLE.sub(_fold_char, text) if _FOLDABLE.search(text) else text
    spans: list[tuple[int, int, str]] = []

    if "://" in norm or "www" in norm or "WWW" in norm:
        found = ((m.start(), m.start() + len(m.group().rstrip(_URL_TRAILING)), "url") for m in _URL.finditer(norm))
        norm = _mask(norm, _claim(spans, found))
    if "@" in norm:
        norm = _mask(norm, _claim(spans, ((*m.span(), "email") for m in _EMAIL.finditer(norm))))
    if "." in norm and _BARE_URL_GATE.search(norm):
        found = ((m.start(), m.start() + len(m.group().rstrip(_URL_TRAILING)), "url")
                 for m in _BARE_URL.finditer(norm))
        norm = _mask(norm, _claim(spans, found))
    if _MAC_GATE.search(norm) or ("." in norm and _CISCO_MAC_GATE.search(norm)):
        norm = _mask(norm, _claim(spans, ((*m.span(), "mac_address") for m in _MAC.finditer(norm))))
    if ":" in norm:
        found, last = [], -1
        for g in _IPV6_GATE.finditer(norm):
            if g.start() < last:
                continue
            for m in _IPV6.finditer(norm, max(0, g.start() - 40), min(len(norm), g.end() + 60)):
                if m.start() <= g.start() < m.end() and _valid_ipv6(m.group()):
                    found.append((*m.span(), "ip_address"))
                    last = m.end()
                    break
        norm = _mask(norm, _claim(spans, found))

    n = len(norm)
    for run in _NUM_RUN.finditer(norm):
        s, e = run.span()
        chunk = run.group()
        if e - s - sum(chunk.count(c) for c in _RUN_SEPARATORS) < 7 and chunk.count(".") < 3:
            continue  # fewer than 7 digits and no dotted quad: a year, a date, a price
        lo, hi = max(0, s - 5), min(n, e + 2)
        for pattern, check, kind in _NUMERIC_DETECTORS:
            for m in pattern.finditer(norm, lo, hi):
                span = check(m, norm)
                if span is not None:
                    _claim(spans, [(*span, kind)])
    return spans


def redact_pii(text: str, counts: dict[str, int] | None = None) -> str:
    """``text`` with each piece of personal data replaced by its typed placeholder (``<email>``,
    ``<phone>``...); ``counts`` (if given) is incremented per kind."""
    spans = find_pii(text)
    if not spans:
        return text
    parts, pos = [], 0
    for start, end, kind in spans:
        parts += [text[pos:start], PII_PLACEHOLDERS[kind]]
        pos = end
        if counts is not None:
            counts[kind] = counts.get(kind, 0) + 1
    parts.append(text[pos:])
    return "".join(parts)


def _redact(text: str, report: CleaningReport) -> str:
    return redact_pii(text, report.redactions)

_WRAPPED_NEWLINE = re.compile(r"(?<=\S)[^\S\n]*\n(?=[^\S\n]*\S)")  # one newline between two non-blank lines


def unwrap_lines(texts: list[str]) -> list[str]:
    """Hard-wrapped text -> one line per paragraph: a single newline between two non-blank lines becomes a
    space; blank lines (paragraph breaks) stay."""
    return [_WRAPPED_NEWLINE.sub(" ", t.replace("\r\n", "\n")) for t in texts]


def _normalize_whitespace(text: str) -> str:
    if "\r" in text:
        text = _NEWLINES.sub("\n", text)
    text = _HSPACE.sub(" ", text)
    text = "\n".join(line.strip(" ") for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def clean_text(text: str, cfg: CleanConfig | None = None, report: CleaningReport | None = None) -> str:
    """One document through the per-document steps (no length filter, no dedup)."""
    cfg = cfg or CleanConfig()
    report = report if report is not None else CleaningReport()
    if cfg.unicode_form:
        text = unicodedata.normalize(cfg.unicode_form, text)
    if cfg.strip_html:
        text = _strip_html(text, report)
    if cfg.redact_pii:
        text = _redact(text, report)
    if cfg.normalize_whitespace:
        text = _normalize_whitespace(text)
    if cfg.lowercase:
        text = text.lower()
    return text


def clean_texts(texts: Iterable[str], cfg: CleanConfig | None = None) -> tuple[list[str], CleaningReport]:
    """Clean, filter and dedup ``texts`` (order kept, first copy of duplicates kept) -> (texts, report)."""
    cfg = (cfg or CleanConfig()).validate()
    report = CleaningReport()
    seen: set[str] = set()
    out: list[str] = []
    for i, raw in enumerate(texts):
        if not isinstance(raw, str):
            raise TypeError(f"clean_texts: document {i} is {type(raw).__name__} {raw!r}, expected str")
        report.docs_in += 1
        report.chars_in += len(raw)
        text = clean_text(raw, cfg, report)
        if len(text) < cfg.min_chars:  # min_chars=0 keeps even empty documents (e.g. to stay row-aligned)
            if text:
                report.short_dropped += 1
            else:
                report.empty_dropped += 1
            continue
        if cfg.dedup:
            if text in seen:
                report.duplicates_dropped += 1
                continue
            seen.add(text)
        out.append(text)
        report.chars_out += len(text)
    report.docs_out = len(out)
    return out, report
