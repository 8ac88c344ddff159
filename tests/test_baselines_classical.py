"""Classical baselines: the exact bow recipe, pickle-free save/load, Chinese segmentation, stop words, POS."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from scratchlm.baselines import classical as classical_mod
from scratchlm.baselines.classical import (
    ClassicalConfig,
    ClassicalModel,
    TaggerMissingError,
    TokenAnalyzer,
    chinese_stopwords,
    detect_language,
    english_stopwords,
    fit_classical,
)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

EN_POS = ["a great film with wonderful acting and a moving story", "i loved the music, the cast was superb",
          "the best movie of the year, brilliant and funny", "a touching and beautiful film, highly recommended",
          "excellent direction and a great script", "the actors were wonderful and the ending was perfect"]
EN_NEG = ["a boring film with terrible acting and a dull story", "i hated the music, the cast was awful",
          "the worst movie of the year, stupid and slow", "a pointless and ugly film, a waste of time",
          "poor direction and a terrible script", "the actors were bad and the ending was awful"]
EN_MID = ["an average film, some good and some bad scenes", "the movie was okay, nothing special",
          "it was fine for a rainy afternoon, not more", "a mixed bag of a film, neither good nor bad"]
ZH_POS = ["这家酒店的服务非常好，房间也很干净，我们下次还会再来", "质量不错，物流很快，总体来说很满意",
          "屏幕清晰，电池耐用，性价比很高，推荐购买", "早餐丰富，位置方便，前台的服务态度很好",
          "这本书写得很精彩，我一口气就看完了", "环境优美，交通便利，是一次愉快的入住"]
ZH_NEG = ["房间太小了，服务态度很差，不会再来了", "电池不耐用，屏幕也有问题，非常失望",
          "物流太慢，包装破损，质量很差", "早餐难吃，隔音效果差，晚上根本睡不着",
          "这本书内容空洞，浪费了我的时间和钱", "前台的服务态度恶劣，卫生也不干净"]


def _english(times: int = 3):
    texts = (EN_POS + EN_NEG + EN_MID) * times
    labels = (["pos"] * len(EN_POS) + ["neg"] * len(EN_NEG) + ["mid"] * len(EN_MID)) * times
    return texts, labels


def _chinese(times: int = 2):
    return (ZH_POS + ZH_NEG) * times, ([1] * len(ZH_POS) + [0] * len(ZH_NEG)) * times


def _imdb_sample(n_train: int = 2000, n_eval: int = 500):
    root = os.environ.get("SCRATCHLM_DATA_DIR")
    path = Path(root) / "imdb" / "train.parquet" if root else None
    if path is None or not path.is_file():
        pytest.skip("IMDb data not found (set SCRATCHLM_DATA_DIR to the shared data folder)")
    import pandas as pd

    df = pd.read_parquet(path)
    idx = np.random.default_rng(0).permutation(len(df))[:n_train + n_eval]
    texts, labels = df["text"].astype(str).tolist(), df["label"].to_numpy()
    tr, ev = idx[:n_train], idx[n_train:]
    return [texts[i] for i in tr], labels[tr], [texts[i] for i in ev]


def _roundtrip(model: ClassicalModel, texts, tmp_path: Path) -> ClassicalModel:
    before_p, before_y = model.predict_proba(texts), model.predict(texts)
    folder = model.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["classical.json", "classical.safetensors"]
    json.loads((folder / "classical.json").read_text("utf-8"))  # plain JSON, no pickle anywhere
    loaded = ClassicalModel.load(folder)
    after_p, after_y = loaded.predict_proba(texts), loaded.predict(texts)
    assert np.array_equal(before_p, after_p), np.abs(before_p - after_p).max()
    assert np.array_equal(before_y, after_y) and before_y.dtype == after_y.dtype
    assert loaded.classes == model.classes
    assert loaded.vocabulary_size == model.vocabulary_size
    assert loaded.num_parameters == model.num_parameters
    assert loaded.config == model.config and loaded.plan == model.plan
    return loaded


def test_bow_is_exactly_countvectorizer_plus_logistic_regression():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    texts, labels, ev = _imdb_sample()
    model = fit_classical(ClassicalConfig(), texts, labels)
    with threadpool_limits(limits=1):  # as fit_classical: threaded BLAS reductions would change the last bits
        ref = make_pipeline(CountVectorizer(), LogisticRegression()).fit(texts, labels)
    assert model.vectorizer.get_params() == CountVectorizer().get_params()
    assert model.logreg.get_params() == LogisticRegression().get_params()
    assert np.array_equal(model.predict(ev), ref.predict(ev))
    assert np.array_equal(model.predict_proba(ev), ref.predict_proba(ev))
    assert model.language == "en" and model.classes == [0, 1]
    assert model.vocabulary_size == len(ref[0].vocabulary_)
    assert model.num_parameters == model.vocabulary_size + 1  # binary: one coefficient row + one intercept


@pytest.mark.parametrize("kind", ["bow", "tfidf"])
def test_save_load_is_bit_identical_english(kind, tmp_path):
    texts, labels = _english()
    model = fit_classical(ClassicalConfig(kind=kind, stopwords=kind == "tfidf"), texts, labels)
    assert model.classes == ["mid", "neg", "pos"] and model.predict_proba(texts).shape == (len(texts), 3)
    assert model.num_parameters == 3 * model.vocabulary_size + 3
    loaded = _roundtrip(model, texts + ["an unseen review with great acting"], tmp_path)
    assert (loaded.plan["vectorizer"] == "TfidfVectorizer") == (kind == "tfidf")
    assert not list(tmp_path.rglob(".*.tmp-*"))  # atomic writes leave no temp files behind


def test_tfidf_recipe():
    texts, labels = _english()
    model = fit_classical(ClassicalConfig(kind="tfidf", C=5.0, seed=3), texts, labels)
    v, lr = model.vectorizer.get_params(), model.logreg.get_params()
    assert v["ngram_range"] == (1, 2) and v["sublinear_tf"] and v["min_df"] == 2
    assert lr["C"] == 5.0 and lr["max_iter"] == classical_mod.TFIDF_MAX_ITER and lr["random_state"] == 3
    assert any(" " in t for t in model.vectorizer.vocabulary_)  # bigrams
    report = model.evaluate(texts, labels)
    assert report["n"] == len(texts) and report["labels"] == model.classes and report["accuracy"] > 0.9


@pytest.mark.parametrize("kind", ["bow", "tfidf"])
def test_save_load_is_bit_identical_chinese_jieba_pos(kind, tmp_path):
    texts, labels = _chinese()
    model = fit_classical(ClassicalConfig(kind=kind, pos_tags=True, stopwords=True), texts, labels)
    assert model.language == "zh" and model.plan["tokenizer"] == "jieba"
    vocab = model.vectorizer.vocabulary_
    assert any(t.startswith("pos:") for t in vocab) and any("/" in t for t in vocab)
    assert "服务/vn" in vocab or "服务/v" in vocab or "服务/n" in vocab
    loaded = _roundtrip(model, texts + ["服务很好，但是房间有点小"], tmp_path)
    assert isinstance(loaded.vectorizer.analyzer, TokenAnalyzer) and loaded.vectorizer.analyzer.pos_tags


def test_chinese_segmentation_produces_words():
    assert detect_language(ZH_POS) == "zh" and detect_language(EN_POS) == "en"
    words = TokenAnalyzer("jieba")("我们今天去北京大学参观，天气很好！")
    assert "今天" in words and "我们" in words and "，" not in words and "！" not in words
    assert any(len(w) >= 2 for w in words) and "我们今天去北京大学参观" not in words

    texts, labels = _chinese()
    seg = fit_classical(ClassicalConfig(), texts, labels)
    assert seg.plan["tokenizer"] == "jieba" and seg.vectorizer.get_params()["ngram_range"] == (1, 1)
    assert {"服务", "酒店", "质量"} <= set(seg.vectorizer.vocabulary_)
    assert max(len(t) for t in seg.vectorizer.vocabulary_) < 8  # words, not whole clauses

    chars = fit_classical(ClassicalConfig(segment="none"), texts, labels)
    assert chars.plan["tokenizer"] == "char"
    assert max(len(t) for t in chars.vectorizer.vocabulary_) == classical_mod.CHAR_NGRAM_MAX


def test_stopwords_are_removed():
    texts, labels = _english()
    plain = set(fit_classical(ClassicalConfig(), texts, labels).vectorizer.vocabulary_)
    stopped = set(fit_classical(ClassicalConfig(stopwords=True), texts, labels).vectorizer.vocabulary_)
    assert {"the", "and", "was"} <= plain
    assert not stopped & set(english_stopwords()) and {"film", "great"} <= stopped

    zh_texts, zh_labels = _chinese()
    zh_stop = set(chinese_stopwords())
    assert len(zh_stop) >= 200 and "的" in zh_stop and not {"不", "没有", "很"} & zh_stop
    zplain = set(fit_classical(ClassicalConfig(), zh_texts, zh_labels).vectorizer.vocabulary_)
    zstopped = fit_classical(ClassicalConfig(kind="tfidf", stopwords=True), zh_texts, zh_labels)
    tokens = {w for term in zstopped.vectorizer.vocabulary_ for w in term.split(" ")}
    assert {"的", "了", "我"} <= zplain
    assert not tokens & zh_stop and "服务" in tokens


def test_english_pos_without_spacy_is_a_clear_error(monkeypatch):
    texts, labels = _english(1)
    cfg = ClassicalConfig(pos_tags=True, language="en")
    monkeypatch.setattr(classical_mod, "_SPACY_CACHE", {})
    monkeypatch.setitem(sys.modules, "spacy", None)  # "import spacy" raises ImportError
    with pytest.raises(TaggerMissingError, match=r"spaCy, which is not installed: pip install spacy && "
                                                 r"python -m spacy download en_core_web_sm"):
        fit_classical(cfg, texts, labels)

    def missing_model(name, **kw):
        raise OSError(f"[E050] Can't find model '{name}'")

    monkeypatch.setitem(sys.modules, "spacy", types.SimpleNamespace(load=missing_model))
    with pytest.raises(TaggerMissingError, match=r"en_core_web_sm model, which is not installed"):
        fit_classical(cfg, texts, labels)


def test_bad_input_errors(tmp_path):
    texts, labels = _english(1)
    with pytest.raises(ValueError, match=r"single class \('pos'\)"):
        fit_classical(ClassicalConfig(), EN_POS, ["pos"] * len(EN_POS))
    with pytest.raises(ValueError, match="12 texts but 11 labels"):
        fit_classical(ClassicalConfig(), texts[:12], labels[:11])
    with pytest.raises(ValueError, match="empty list"):
        fit_classical(ClassicalConfig(), [], [])
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        fit_classical(ClassicalConfig(), ["a b", None], [0, 1])
    with pytest.raises(ValueError, match="classical.kind"):
        fit_classical(ClassicalConfig(kind="svm"), texts, labels)
    for bad, field in [({"ngram_max": 0}, "ngram_max"), ({"language": "fr"}, "language"),
                       ({"segment": "spacy"}, "segment"), ({"C": -1.0}, "C"), ({"max_iter": 1.5}, "max_iter"),
                       ({"pos_tags": True, "segment": "none"}, "pos_tags")]:
        with pytest.raises(ValueError, match=f"classical.{field}"):
            ClassicalConfig(**bad).validate()
    with pytest.raises(ValueError, match="unknown classical config field"):
        ClassicalConfig.from_dict({"kindd": "bow"})
    zh_texts, zh_labels = _chinese(1)
    with pytest.raises(ValueError, match="stopwords=true needs word segmentation"):
        fit_classical(ClassicalConfig(segment="none", stopwords=True), zh_texts, zh_labels)
    model = fit_classical(ClassicalConfig(), texts, labels)
    with pytest.raises(TypeError, match="not a single str"):
        model.predict("a single review")
    assert model.predict([]).shape == (0,) and model.predict_proba([]).shape == (0, 3)
    with pytest.raises(FileNotFoundError, match="not a saved classical model"):
        ClassicalModel.load(tmp_path / "nowhere")
