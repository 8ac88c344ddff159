"""Clean raw documents before tokenizer training / pretraining, and report what changed.

Steps, in order: Unicode normalization -> HTML tags/entities -> PII redaction -> whitespace -> lowercase
-> length filter -> exact dedup. Every step is optional (:class:`CleanConfig`); :class:`CleaningReport`
counts what each one did.
"""

from __future__ import annotations

import dataclasses
import html
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

UNICODE_FORMS = ("NFC", "NFKC")
PII_KINDS = ("email", "phone", "url", "id_number")
_PLACEHOLDER = {"email": "[EMAIL]", "phone": "[PHONE]", "url": "[URL]", "id_number": "[ID]"}

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

# URLs stop at whitespace and non-ASCII (Chinese text often has no space after a link); trailing
# punctuation is given back
_URL = re.compile(r"(?<![@A-Za-z0-9.])(?:https?://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_URL_TRAILING = ".,;:!?)]}'\""
# lookarounds name ASCII explicitly, not \w/\b: CJK characters are \w, so "电话13812345678" has no \b
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z])"
)
_ID_NUMBER = re.compile(
    # Chinese resident ID: 6-digit region, birth date YYYYMMDD, 3-digit sequence, check digit or X
    r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    r"\d{3}[0-9Xx](?![0-9A-Za-z])"
    r"|(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])"  # US SSN
)
_PHONE = re.compile(
    r"(?<![\d+])(?:\+?86[ -]?)?1[3-9]\d{9}(?!\d)"  # Chinese mobile
    # international: needs the "+" prefix
    r"|(?<![A-Za-z0-9+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}(?!\d)"
    # US style: needs separators, so years and plain numbers never match
    r"|(?<![\d-])(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[.-])\d{3}[.-]\d{4}(?![\d-])"
)
# cheap gate for the ID/phone patterns (their leading lookbehinds make a full scan slow): 7+ digit-ish chars
_DIGIT_RUN = re.compile(r"\d[\d ()+.-]{5,}\d")
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
    redact_pii: bool = False
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


def _redact_url(m: re.Match[str]) -> str:
    url = m.group(0)
    core = url.rstrip(_URL_TRAILING)
    return _PLACEHOLDER["url"] + url[len(core) :]


_LAST_GROUP = re.compile(r"[ .-]?\d+$")


def _phone(m: re.Match[str], counts: dict[str, int]) -> str:
    number, rest = m.group(0), ""
    while sum(c.isdigit() for c in number) > 15:  # E.164 max: give back trailing groups ("... 0958 2019")
        tail = _LAST_GROUP.search(number)
        if tail is None:
            break
        number, rest = number[: tail.start()], tail.group(0) + rest
    if not 7 <= sum(c.isdigit() for c in number) <= 15:  # too short to be a phone number
        return m.group(0)
    counts["phone"] = counts.get("phone", 0) + 1
    return _PLACEHOLDER["phone"] + rest


def _redact(text: str, report: CleaningReport) -> str:
    counts = report.redactions
    if "http" in text or "www." in text:
        text, n = _URL.subn(_redact_url, text)
        counts["url"] = counts.get("url", 0) + n
    if "@" in text:
        text, n = _EMAIL.subn(_PLACEHOLDER["email"], text)
        counts["email"] = counts.get("email", 0) + n
    if _DIGIT_RUN.search(text):
        text, n = _ID_NUMBER.subn(_PLACEHOLDER["id_number"], text)
        counts["id_number"] = counts.get("id_number", 0) + n
        text = _PHONE.sub(lambda m: _phone(m, counts), text)
    return text


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
