"""Text cleaning: unicode, HTML, whitespace, PII redaction, filters, dedup and the report."""

from __future__ import annotations

import pytest

from scratchlm.data.clean import CleanConfig, CleaningReport, clean_text, clean_texts

PLAIN = CleanConfig(unicode_form=None, strip_html=False, normalize_whitespace=False, dedup=False, redact_pii=False)


def test_imdb_br_tags_become_newlines_and_are_counted() -> None:
    raw = "Great film.<br /><br />The acting was <i>superb</i>.<br>Go see it</p>"
    out, report = clean_texts([raw], CleanConfig())
    assert out == ["Great film.\n\nThe acting was superb.\nGo see it"]
    assert report.html_tags_removed == 6


def test_entities_unescaped_and_counted() -> None:
    out, report = clean_texts(["Tom &amp; Jerry&#39;s &quot;show&quot; &#x263A; &nosuch;"], CleanConfig())
    assert out == ['Tom & Jerry\'s "show" \u263a &nosuch;']
    assert report.html_entities_unescaped == 5


def test_escaped_markup_is_removed_but_non_tags_survive() -> None:
    text = "a &lt;small&gt;note&lt;/small&gt; <unk> x<y and <3 <s> 1 < 2 > 0"
    out, _ = clean_texts([text], CleanConfig())
    assert out == ["a note <unk> x<y and <3 <s> 1 < 2 > 0"]
    # SMS Spam writes placeholders as escaped "<#>" / "<TIME>": kept, while real tags with attributes go
    sms = "Call me at &lt;TIME&gt; on &lt;#&gt; <A HREF=\"http://x.com/?a=1&b=2\">link</A> <img src='x'/>"
    assert clean_texts([sms], CleanConfig())[0] == ["Call me at <TIME> on <#> link"]


def test_nfkc_folds_full_width() -> None:
    assert clean_texts(["ＡＢＣ１２３"], CleanConfig())[0] == ["ABC123"]
    assert clean_texts(["ＡＢＣ１２３"], CleanConfig(unicode_form="NFC"))[0] == ["ＡＢＣ１２３"]
    assert clean_text("e\u0301", CleanConfig(unicode_form="NFC")) == "\u00e9"


def test_whitespace_normalization_keeps_single_newlines() -> None:
    raw = "  a \t  b  \r\nc\n\n\n\n   d\u00a0e  \n"
    assert clean_text(raw, CleanConfig()) == "a b\nc\n\nd e"
    assert clean_text(raw, CleanConfig(normalize_whitespace=False, unicode_form=None)) == raw


def test_dedup_length_filter_and_counts() -> None:
    docs = ["Hello  world", "hello world", "Hello world", "", "  \n ", "hi", "Hello world"]
    out, report = clean_texts(docs, CleanConfig(min_chars=3))
    assert out == ["Hello world", "hello world"]
    assert (report.docs_in, report.docs_out) == (7, 2)
    assert (report.empty_dropped, report.short_dropped, report.duplicates_dropped) == (2, 1, 2)
    assert report.chars_in == sum(map(len, docs)) and report.chars_out == 22

    lowered, report = clean_texts(docs, CleanConfig(lowercase=True, min_chars=3))
    assert lowered == ["hello world"] and report.duplicates_dropped == 3

    kept, report = clean_texts(docs, CleanConfig(dedup=False, min_chars=0))
    assert len(kept) == 7 and report.empty_dropped == 0


def test_redaction_counts_each_kind() -> None:
    text = (
        "Mail john.doe@example.com or see https://example.com/a?b=1. Visit www.test.org, "
        "call +44 20 7946 0958, (555) 123-4567 or 13812345678. "
        "SSN 123-45-6789, 身份证号11010519491231002X。"
    )
    out, report = clean_texts([text], CleanConfig(redact_pii=True))
    assert out == [
        "Mail <email> or see <url>. Visit <url>, call <phone>, <phone> or <phone>. SSN <id>, 身份证号<id>。"
    ]
    assert report.redactions == {"email": 1, "phone": 3, "url": 2, "id_number": 2, "credit_card": 0,
                                 "ip_address": 0, "mac_address": 0}


def test_redaction_leaves_years_and_plain_numbers() -> None:
    safe = [
        "in 1999 there were 20000 people",
        "order 12345678 shipped 2020-01-15 for 1,234,567 dollars",
        "score 3-2 at 10:45, room 101",
    ]
    out, report = clean_texts(safe, CleanConfig(redact_pii=True))
    assert out == safe
    assert sum(report.redactions.values()) == 0


def test_redaction_in_chinese_text_without_spaces() -> None:
    out, _ = clean_texts(["请拨打13912345678或发邮件到wang@example.cn联系我们"], CleanConfig(redact_pii=True))
    assert out == ["请拨打<phone>或发邮件到<email>联系我们"]


def test_chinese_text_passes_through() -> None:
    text = "这家酒店的服务很好。\n房间干净，早餐也不错！"
    assert clean_text(text, CleanConfig(unicode_form=None)) == text
    assert clean_text(text, CleanConfig(unicode_form="NFC")) == text
    # NFKC folds full-width punctuation to ASCII and leaves the ideographs alone
    assert clean_text(text, CleanConfig()) == "这家酒店的服务很好。\n房间干净,早餐也不错!"


def test_everything_off_is_identity() -> None:
    docs = ["  <b>x</b> &amp;\n\n\n", "ＡＢＣ", "ＡＢＣ"]
    out, report = clean_texts(docs, PLAIN)
    assert out == docs and report.html_tags_removed == 0


def test_report_summary_merge_and_dict() -> None:
    _, a = clean_texts(["<br />one", "one", "x@y.com"], CleanConfig(redact_pii=True))
    _, b = clean_texts(["two &amp; two", "two &amp; two"], CleanConfig())
    total = CleaningReport().merge(a).merge(b)
    assert (total.docs_in, total.docs_out, total.duplicates_dropped) == (5, 3, 2)
    assert total.redactions["email"] == 1 and total.html_entities_unescaped == 2
    summary = total.summary()
    for fragment in ("documents in", "5", "duplicates dropped", "redacted email", str(total.chars_in)):
        assert fragment in summary
    assert total.to_dict()["redactions"]["email"] == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"unicode_form": "NFD"},
        {"unicode_form": "nfkc"},
        {"min_chars": -1},
        {"min_chars": 1.5},
        {"dedup": "yes"},
    ],
)
def test_config_validation(changes: dict) -> None:
    with pytest.raises(ValueError, match="CleanConfig"):
        CleanConfig(**changes).validate()
    with pytest.raises(ValueError):
        clean_texts(["x"], CleanConfig(**changes))


def test_non_string_document_is_rejected() -> None:
    with pytest.raises(TypeError, match="document 1 is NoneType"):
        clean_texts(["a", None], CleanConfig())  # type: ignore[list-item]
