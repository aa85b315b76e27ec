"""Discovery: BM25 keyword ranking, embedding ranking, updates, and quality on the labelled set."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robustmq.agents.discovery import (
    Document,
    DocumentIndex,
    KeywordIndex,
    WordLlamaEmbedder,
    agent_card_document,
    stem,
    tokenize,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).parent.parent / "data" / "discovery_agents.json"
TOP1_TARGET = 0.9


class HashEmbedder:
    """A deterministic bag-of-words embedder, to test the index without the model."""

    dim = 64

    def embed(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for token in tokenize(text):
                out[i, hash(token) % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            if norm:
                out[i] /= norm
        return out


@pytest.fixture(scope="module")
def labelled():
    return json.loads(DATA.read_text())


@pytest.fixture(scope="module")
def agent_index(labelled):
    index = DocumentIndex(WordLlamaEmbedder())
    for card in labelled["agents"]:
        index.add(agent_card_document(card["name"], card))
    return index


def test_stemming_joins_word_forms():
    assert stem("translation") == stem("translate") == stem("translating")
    assert tokenize("The Weather, please!") == [stem("weather")]


def test_bm25_ranks_rarer_and_more_frequent_terms_higher():
    index = KeywordIndex()
    index.add("a", ["invoice payment payment"])
    index.add("b", ["payment refund"])
    index.add("c", ["weather"])
    hits = index.search("invoice")
    assert [h.doc_id for h in hits] == ["a"]
    assert index.search("payment")[0].doc_id == "a"
    index.remove("a")
    assert [h.doc_id for h in index.search("payment")] == ["b"]


def test_updates_replace_the_old_text_and_vectors():
    index = DocumentIndex(HashEmbedder())
    index.add(Document("x", ["alpha"], ["alpha"]))
    index.add(Document("x", ["beta"], ["beta"]))
    assert index.search_text("alpha", 10) == []
    assert [h.doc_id for h in index.search_text("beta", 10)] == ["x"]
    assert [h.doc_id for h in index.search_semantic("beta", 10)] == ["x"]
    index.remove("x")
    assert index.search_semantic("beta", 10) == []
    assert len(index) == 0


def test_semantic_pagination_is_stable():
    index = DocumentIndex(HashEmbedder())
    for i in range(30):
        index.add(Document(f"d{i}", [f"word{i} common"], [f"word{i} common"]))
    everything = [h.doc_id for h in index.search_semantic("common", 30)]
    paged = [h.doc_id for p in range(3) for h in index.search_semantic("common", 10, p * 10)]
    assert paged == everything and len(set(everything)) == 30


def test_vectors_embedded_off_thread_skip_documents_changed_meanwhile():
    index = DocumentIndex(HashEmbedder())
    index.add(Document("a", ["one"], ["one"]))
    index.add(Document("b", ["two"], ["two"]))
    batch = index.vectors.take_pending()
    index.remove("a")
    index.vectors.install(batch, index.vectors.embed_batch(batch))
    assert [h.doc_id for h in index.search_semantic("one two", 10)] == ["b"]


def test_card_document_covers_skills_tags_and_examples(labelled):
    card = labelled["agents"][0]
    doc = agent_card_document(card["name"], card)
    text = " ".join(doc.keywords)
    skill = card["skills"][0]
    for part in (card["name"], card["description"], skill["name"], skill["tags"][0], skill["examples"][0]):
        assert part in text
    assert any(skill["examples"][0] == p for p in doc.passages)


def test_labelled_set_is_large_enough(labelled):
    names = {c["name"] for c in labelled["agents"]}
    assert len(names) >= 15
    assert len(labelled["queries"]) >= 30
    assert {q["expected"] for q in labelled["queries"]} <= names


def _accuracy(index, queries, search):
    top1 = top3 = 0
    for q in queries:
        ids = [h.doc_id for h in search(index, q["text"])]
        top1 += ids[:1] == [q["expected"]]
        top3 += q["expected"] in ids
    return top1 / len(queries), top3 / len(queries)


def test_semantic_discovery_accuracy_on_paraphrases(agent_index, labelled):
    top1, top3 = _accuracy(agent_index, labelled["queries"], lambda ix, t: ix.search_semantic(t, 3))
    print(f"semantic discovery: top-1 {top1:.3f}, top-3 {top3:.3f} over {len(labelled['queries'])} requests")
    assert top1 >= TOP1_TARGET
    assert top3 >= top1


def test_keyword_discovery_finds_exact_vocabulary(agent_index, labelled):
    # every agent is found by its own skill tag
    for card in labelled["agents"]:
        tag = card["skills"][0]["tags"][-1]
        hits = agent_index.search_text(tag, 3)
        assert card["name"] in [h.doc_id for h in hits], tag
    top1, top3 = _accuracy(agent_index, labelled["queries"], lambda ix, t: ix.search_text(t, 3))
    print(f"keyword discovery: top-1 {top1:.3f}, top-3 {top3:.3f}")


def test_an_empty_index_and_keyword_search_need_no_numpy():
    # a fresh interpreter: importing discovery, building indexes and searching an empty one
    # must not import numpy (a broker with nothing to find stays small)
    code = (
        "import sys\n"
        "from robustmq.agents.discovery import DocumentIndex, default_embedder\n"
        "index = DocumentIndex(default_embedder())\n"
        "assert index.search_text('translate', 5) == []\n"
        "assert 'numpy' not in sys.modules and 'wordllama' not in sys.modules, 'loaded early'\n"
        "from robustmq.agents.discovery import Document\n"
        "index.add(Document('a', ['translate letters'], ['translate letters']))\n"
        "assert [h.doc_id for h in index.search_text('translate', 5)] == ['a']\n"
        "assert 'numpy' in sys.modules and 'wordllama' not in sys.modules\n"
    )
    root = Path(__file__).parent.parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)
