"""PII redaction: a table of personal data that must go (English and Chinese formats) and of ordinary
numbers and text that must stay, the checksums behind cards and IDs, the report and the defaults."""

from __future__ import annotations

import numpy as np
import pytest

from scratchlm.data.clean import (
    PII_KINDS,
    PII_PLACEHOLDERS,
    CleanConfig,
    card_number_ok,
    clean_text,
    clean_texts,
    cn_id_checksum_ok,
    find_pii,
    luhn_ok,
    redact_pii,
)

# (text, redacted text): every kind the issue lists, in the formats people write them
POSITIVE = [
    # e-mail, including internationalized domains and local parts, and text glued to Chinese
    ("mail john.doe@example.com now", "mail <email> now"),
    ("JOHN_DOE+tag@Sub.Example.CO.UK", "<email>"),
    ("请发邮件到wang@example.cn联系我们", "请发邮件到<email>联系我们"),
    ("联系 user@例子.中国 谢谢", "联系 <email> 谢谢"),
    ("schreib an info@münchen.de bitte", "schreib an <email> bitte"),
    ("josé.garcía@ejemplo.es", "<email>"),
    ("почта@пример.рф", "<email>"),
    ("user@xn--fsqu00a.xn--0zwm56d", "<email>"),
    ("邮箱：ｗａｎｇ＠ｅｘａｍｐｌｅ．ｃｏｍ", "邮箱：<email>"),
    ("prepared by Jim <jtinsley@pobox.com>", "prepared by Jim <<email>>"),
    # URLs with a scheme, www., a CJK host, and scheme-less links with a path or port
    ("see https://example.com/a?b=1.", "see <url>."),
    ("Visit www.test.org, now", "Visit <url>, now"),
    ("访问https://example.com/path了解更多", "访问<url>了解更多"),
    ("ftp://files.example.org/pub/x.tar.gz", "<url>"),
    ("(https://en.wikipedia.org/wiki/Foo)", "(<url>)"),
    ("https://例子.中国/about", "<url>"),
    ("mysql://root:secret@10.0.0.5:3306/db", "<url>"),
    ("see example.com/about for more", "see <url> for more"),
    ("short link bit.ly/3xYz!", "short link <url>!"),
    ("code at github.com/user/repo.", "code at <url>."),
    ("api.example.io:8080/v1/users", "<url>"),
    # US phone numbers, separated or not
    ("call 555 123 4567 now", "call <phone> now"),
    ("5551234567", "<phone>"),
    ("(555) 123-4567", "<phone>"),
    ("555-123-4567", "<phone>"),
    ("555.123.4567", "<phone>"),
    ("1-800-555-1234", "<phone>"),
    ("+1 (555) 123-4567", "<phone>"),
    ("direct no. 713/853-1555.", "direct no. <phone>."),
    ("me at (713)  853-3399", "me at <phone>"),
    # other international numbers (need the "+")
    ("+44 20 7946 0958", "<phone>"),
    ("+49 30 901820", "<phone>"),
    ("+33 1 23 45 67 89", "<phone>"),
    # Chinese mobiles: plain, dashed, spaced, with +86, full-width
    ("13812345678", "<phone>"),
    ("138-1234-5678", "<phone>"),
    ("138 1234 5678", "<phone>"),
    ("+86 138 1234 5678", "<phone>"),
    ("+8613812345678", "<phone>"),
    ("手机：１３８１２３４５６７８。", "手机：<phone>。"),
    ("(+86)13912345678", "<phone>"),
    ("１３８－１２３４－５６７８", "<phone>"),
    ("请拨打13912345678或联系我们", "请拨打<phone>或联系我们"),
    # Chinese landlines
    ("电话010-62345678", "电话<phone>"),
    ("(010)62345678", "<phone>"),
    ("0755-26781234", "<phone>"),
    ("021 6234 5678", "<phone>"),
    ("+86 10 6234 5678", "<phone>"),
    ("（０１０）６２３４５６７８", "<phone>"),
    # Chinese resident IDs: 18 digits with a valid check digit (plain, spaced, dashed) and 15 digits
    ("身份证号11010519491231002X。", "身份证号<id>。"),
    ("440308199003071235", "<id>"),
    ("110105 19491231 002X", "<id>"),
    ("440308 1990 0307 1235", "<id>"),
    ("310104-19851112-0013", "<id>"),
    ("旧身份证110105491231002", "旧身份证<id>"),
    ("１１０１０５１９４９１２３１００２Ｘ", "<id>"),
    # US SSNs: dashed, spaced, and unseparated after a keyword
    ("SSN 123-45-6789", "SSN <id>"),
    ("123 45 6789", "<id>"),
    ("SSN: 078051120", "SSN: <id>"),
    ("social security number 219099999", "social security number <id>"),
    # credit cards: every issuer length, grouped or not, full-width
    ("4111 1111 1111 1111", "<card>"),
    ("4111-1111-1111-1111", "<card>"),
    ("card 4111111111111111 exp 02/28", "card <card> exp 02/28"),
    ("4111.1111.1111.1111", "<card>"),
    ("5555555555554444", "<card>"),
    ("2223 0000 4840 0011", "<card>"),
    ("3782 822463 10005", "<card>"),
    ("378282246310005", "<card>"),
    ("6011111111111117", "<card>"),
    ("3530111333300000", "<card>"),
    ("30569309025904", "<card>"),
    ("4222222222222", "<card>"),
    ("6212 3456 7890 1234 569", "<card>"),
    ("卡号４１１１ １１１１ １１１１ １１１１", "卡号<card>"),
    # IPv4 / IPv6
    ("from 192.168.1.20 today", "from <ip> today"),
    ("10.0.0.5", "<ip>"),
    ("server 172.16.254.1:8080", "server <ip>:8080"),
    ("IP地址151.101.0.133的443端口", "IP地址<ip>的443端口"),
    ("１９２．１６８．１．１", "<ip>"),
    ("2001:db8::1", "<ip>"),
    ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "<ip>"),
    ("fe80::1%eth0", "<ip>"),
    ("::ffff:192.0.2.1", "<ip>"),
    ("[2001:db8::8a2e:370:7334]:443", "[<ip>]:443"),
    # MAC addresses
    ("00:1A:2B:3C:4D:5E", "<mac>"),
    ("00-1a-2b-3c-4d-5e", "<mac>"),
    ("MAC地址为001a.2b3c.4d5e。", "MAC地址为<mac>。"),
]

# ordinary text and numbers: unchanged
NEGATIVE = [
    "in 1999 there were 20000 people",
    "order 12345678 shipped 2020-01-15 for 1,234,567 dollars",
    "score 3-2 at 10:45, room 101",
    "根据《刑法》第264条第三款，2020年1月15日起施行",
    "price $1,299.99 and €45.50",
    "version 1.2.3.4 released",  # a dotted quad after "version" is a version
    "v1.2.3.4",
    "LibreOffice 7.3.6.2",  # all four numbers below 10: a version/section number
    "Windows 10.0.19041.1",  # a number above 255
    "see section 4.1.2.3.1",
    "pi is 3.14159265359",
    "4111111111111112",  # fails the Luhn check
    "ISBN 9780306406157",
    "ISBN 9867748786",
    "timestamp 1609459200000 ms",
    "536870912 bytes",  # a bare 9-digit number without an SSN keyword
    "max value 2147483647",
    "4294967295",
    "population 2000000000",
    "美的控股持有2186775548股",
    "Amazon.com is a company",  # a bare domain is a name
    "e.g. this and i.e. that",
    "std::vector<int> and a::b",
    "y = x[::2]",
    "at 10:45:30 on 12:30:00",
    "127.0.0.1 and 0.0.0.0",
    "netmask 255.255.255.0",
    "110105491331002",  # month 13
    "110105194912310021",  # wrong check digit (X expected)
    "123-45-678",
    "000-12-3456",
    "1999–2000 season",
    "the year 2023 had 365 days",
    "243:256::81/64:4/3::243",  # a ratio table, not IPv6
    "user at example dot com",
    "0.30000000000000004",
    "Tel: 12345",
    "TSO 416617018650001409",  # 18 digits that are neither an ID (date) nor a card (Visa has no 18)
    "3.4.5 and 2.0.8",
    "第1章 第2节 1.1 1.2",
]


@pytest.mark.parametrize("text, expected", POSITIVE, ids=[f"pos{i}" for i in range(len(POSITIVE))])
def test_personal_data_is_replaced_by_typed_placeholders(text: str, expected: str) -> None:
    assert redact_pii(text) == expected


@pytest.mark.parametrize("text", NEGATIVE, ids=[f"neg{i}" for i in range(len(NEGATIVE))])
def test_ordinary_text_and_numbers_survive(text: str) -> None:
    assert find_pii(text) == []
    assert redact_pii(text) == text


def test_table_is_big_enough_and_covers_every_kind() -> None:
    assert len(POSITIVE) >= 60 and len(NEGATIVE) >= 30
    kinds = {kind for text, _ in POSITIVE for _, _, kind in find_pii(text)}
    assert kinds == set(PII_KINDS)


def test_full_width_is_matched_but_the_original_span_is_replaced() -> None:
    text = "电话：（０１０）６２３４５６７８，手机１３８ １２３４ ５６７８。"
    spans = find_pii(text)
    assert [text[s:e] for s, e, _ in spans] == ["（０１０）６２３４５６７８", "１３８ １２３４ ５６７８"]
    assert redact_pii(text) == "电话：<phone>，手机<phone>。"  # the full-width punctuation around stays


def test_counts_per_kind() -> None:
    counts: dict[str, int] = {}
    redact_pii("a@b.com c@d.org 13812345678 4111111111111111 192.168.0.9 00:1a:2b:3c:4d:5e", counts)
    assert counts == {"email": 2, "phone": 1, "credit_card": 1, "ip_address": 1, "mac_address": 1}


def test_checksums() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert card_number_ok("4111111111111111") and not card_number_ok("4111111111111112")
    assert not card_number_ok("4111111111111111111"[:18])  # Visa is 13, 16 or 19 digits
    assert cn_id_checksum_ok("11010519491231002X") and cn_id_checksum_ok("11010519491231002x")
    assert not cn_id_checksum_ok("110105194912310021")


def test_redaction_is_on_by_default_and_reported() -> None:
    assert CleanConfig().redact_pii is True
    docs = ["Write to jane@example.org or call (555) 123-4567.", "身份证号11010519491231002X", "nothing here"]
    out, report = clean_texts(docs)
    assert out == ["Write to <email> or call <phone>.", "身份证号<id>", "nothing here"]
    assert report.redactions == {**dict.fromkeys(PII_KINDS, 0), "email": 1, "phone": 1, "id_number": 1}
    summary = report.summary()
    for kind in PII_KINDS:
        assert f"redacted {kind}" in summary
    kept, report = clean_texts(docs, CleanConfig(redact_pii=False))
    assert kept == docs and sum(report.redactions.values()) == 0


def test_placeholders_survive_html_stripping_and_a_second_pass() -> None:
    once = clean_text("<b>mail</b> a@b.com, visit https://x.org/y")
    assert once == "mail <email>, visit <url>"
    assert clean_text(once) == once
    assert set(PII_PLACEHOLDERS) == set(PII_KINDS)


def test_long_ordinary_text_has_no_false_positives() -> None:
    text = (
        "In 2019, revenue rose 12.5% to $3,456,789 (up from 2,987,654 in 2018); see pages 12-34 and "
        "tables 5.1-5.3. The 1920s-1930s saw 1,000,000 visitors. 第3条 本法自2021年1月1日起施行。"
        "参见第12、13条。版本 5.7.25，端口 4000，超时 3600 秒，内存 8 GiB。"
    ) * 200
    assert find_pii(text) == []


def _recipes():
    from pathlib import Path

    import scratchlm

    return sorted((Path(scratchlm.__file__).parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", _recipes(), ids=lambda p: p.stem)
def test_every_shipped_recipe_redacts(recipe) -> None:
    """No recipe turns redaction off, so every pretraining and continued-pretraining corpus is redacted."""
    from scratchlm.config import from_dict, load_yaml

    data = load_yaml(recipe).get("data") or {}
    assert from_dict(CleanConfig, data.get("clean") or {}).redact_pii is True
    for corpus in data.get("corpora") or []:
        assert not (isinstance(corpus, dict) and corpus.get("redact_pii") is False)


def test_prepare_redacts_by_default_counts_per_kind_and_honours_a_corpus_opt_out(tmp_path) -> None:
    from scratchlm.data.prepare import CorpusConfig, DataConfig, prepare
    from scratchlm.tokenizer import MIN_VOCAB_SIZE

    filler = "The quick brown fox jumps over the lazy dog. " * 20
    mails = tmp_path / "mails.jsonl"
    mails.write_text("".join(
        f'{{"text": "Doc {i}: write to person{i}@example.com or call 555-123-45{i:02d}. {filler}"}}\n'
        for i in range(20)), encoding="utf-8")
    public = tmp_path / "public.jsonl"
    public.write_text("".join(f'{{"text": "Page {i}: see https://example.org/p{i} now. {filler}"}}\n'
                              for i in range(20)), encoding="utf-8")
    cfg = DataConfig(corpora=[CorpusConfig(str(mails)), CorpusConfig(str(public), redact_pii=False)],
                     vocab_size=MIN_VOCAB_SIZE + 50, val_fraction=0.1)
    data = prepare(cfg, tmp_path / "data", progress=False, log=lambda *a, **k: None)
    mail_report, public_report = data.cleaning["mails"], data.cleaning["public"]
    n_mail = mail_report["train"]["docs_in"] + mail_report["validation"]["docs_in"]
    assert n_mail == 20
    for split in ("train", "validation"):
        counts = mail_report[split]["redactions"]
        assert counts["email"] == counts["phone"] == mail_report[split]["docs_in"]
        assert sum(public_report[split]["redactions"].values()) == 0  # opted out: the URLs stay
    text = data.tokenizer.decode(np.asarray(data.train.tokens).tolist())
    assert "@example.com" not in text and "<email>" in text and "<phone>" in text
    assert "https://example.org/p" in text
