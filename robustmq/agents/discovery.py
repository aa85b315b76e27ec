"""Offline discovery over documents: BM25 keyword ranking fused with sentence embeddings.

Generic over "documents" (agents, tools, ...): a document is an id, keyword fields and passages
to embed. The embedder sits behind ``Embedder``; the default runs wordllama on the CPU from the
weights inside its wheel and never touches the network.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# semantic mode: weight of the keyword score (scaled to [0, 1]) added to the cosine similarity
KEYWORD_WEIGHT = 0.1
EMBED_BATCH = 256

_TOKEN = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    """a an and are as at be by can could do does for from has have how i in into is it its me my
    of on or our please should so some that the their them then there these this to us was we what
    when where which who will with would you your need needs want wants someone something agent
    agents help""".split()
)
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "ers", "er", "ed", "es", "ly", "s")


def stem(word: str) -> str:
    """A light suffix stripper: enough to join "translate"/"translation"/"translating"."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if suffix in ("ies", "ied"):
                word += "y"
            elif suffix.startswith("ation"):
                word += "at"
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    return [stem(t) for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS]


# -- embeddings ----------------------------------------------------------------------------------


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class WordLlamaEmbedder:
    """Static token embeddings (wordllama, 256 dimensions), loaded offline from the wheel."""

    dim = 256

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import wordllama
            from wordllama import WordLlama

            self._model = WordLlama.load(
                cache_dir=Path(wordllama.__file__).parent, disable_download=True, dim=self.dim
            )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.embed(list(texts), norm=True, batch_size=EMBED_BATCH)
        return np.ascontiguousarray(vectors, dtype=np.float32)


_default_embedder: WordLlamaEmbedder | None = None


def default_embedder() -> WordLlamaEmbedder:
    """One shared wordllama embedder per process (its weights are 16 MB)."""
    global _default_embedder
    if _default_embedder is None:
        _default_embedder = WordLlamaEmbedder()
    return _default_embedder


# -- documents -----------------------------------------------------------------------------------


@dataclass
class Document:
    """What the index knows of one thing to find.

    ``keywords``: texts for the keyword ranking (field weight = how often a text is repeated).
    ``passages``: texts embedded one by one; a document's similarity is its best passage's.
    """

    doc_id: str
    keywords: list[str] = field(default_factory=list)
    passages: list[str] = field(default_factory=list)


@dataclass
class Hit:
    doc_id: str
    score: float


class KeywordIndex:
    """BM25 (k1 = 1.2, b = 0.75) over an inverted index kept in memory."""

    K1 = 1.2
    B = 0.75

    def __init__(self) -> None:
        self._postings: dict[str, dict[str, int]] = {}
        self._lengths: dict[str, int] = {}
        self._terms: dict[str, tuple[str, ...]] = {}
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._lengths)

    def add(self, doc_id: str, texts: Iterable[str]) -> None:
        self.remove(doc_id)
        counts: dict[str, int] = {}
        length = 0
        for text in texts:
            for term in tokenize(text):
                counts[term] = counts.get(term, 0) + 1
                length += 1
        for term, tf in counts.items():
            self._postings.setdefault(term, {})[doc_id] = tf
        self._lengths[doc_id] = length
        self._terms[doc_id] = tuple(counts)
        self._total_length += length

    def remove(self, doc_id: str) -> None:
        terms = self._terms.pop(doc_id, None)
        if terms is None:
            return
        for term in terms:
            posting = self._postings[term]
            del posting[doc_id]
            if not posting:
                del self._postings[term]
        self._total_length -= self._lengths.pop(doc_id)

    def scores(self, query: str) -> dict[str, float]:
        n = len(self._lengths)
        if not n:
            return {}
        avg = self._total_length / n or 1.0
        k1, b = self.K1, self.B
        out: dict[str, float] = {}
        lengths = self._lengths
        for term in set(tokenize(query)):
            posting = self._postings.get(term)
            if not posting:
                continue
            idf = math.log(1.0 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
            for doc_id, tf in posting.items():
                norm = k1 * (1.0 - b + b * lengths[doc_id] / avg)
                out[doc_id] = out.get(doc_id, 0.0) + idf * tf * (k1 + 1.0) / (tf + norm)
        return out

    def search(self, query: str) -> list[Hit]:
        ranked = sorted(self.scores(query).items(), key=lambda kv: (-kv[1], kv[0]))
        return [Hit(d, s) for d, s in ranked]


class VectorIndex:
    """Passage vectors in one growable matrix; a document scores as its best passage."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._matrix = np.zeros((0, embedder.dim), dtype=np.float32)
        self._owner = np.zeros(0, dtype=np.int64)  # row -> document slot
        self._rows = 0
        self._slot_of: dict[str, int] = {}
        self._doc_of: list[str | None] = []
        self._free_slots: list[int] = []
        self._pending: dict[str, list[str]] = {}
        self._generation: dict[str, int] = {}
        self._dirty = False  # rows of removed documents still in the matrix

    def __len__(self) -> int:
        return len(self._slot_of) + len(self._pending)

    def add(self, doc_id: str, passages: Sequence[str]) -> None:
        """Queue a document; vectors are computed in one batch later (``flush`` or ``install``)."""
        self.remove(doc_id)
        self._pending[doc_id] = list(passages) or [doc_id]

    def remove(self, doc_id: str) -> None:
        self._generation[doc_id] = self._generation.get(doc_id, 0) + 1
        self._pending.pop(doc_id, None)
        slot = self._slot_of.pop(doc_id, None)
        if slot is not None:
            self._doc_of[slot] = None
            self._free_slots.append(slot)
            self._dirty = True

    def pending_count(self) -> int:
        return len(self._pending)

    def take_pending(self) -> list[tuple[str, int, list[str]]]:
        """Hand the queued documents out for embedding (possibly on another thread)."""
        batch = [(d, self._generation.get(d, 0), p) for d, p in self._pending.items()]
        self._pending = {}
        return batch

    def embed_batch(self, batch: list[tuple[str, int, list[str]]]) -> np.ndarray:
        """Pure: the vectors of every passage of ``batch``, in order. Safe on a worker thread."""
        return self.embedder.embed([text for _, _, passages in batch for text in passages])

    def install(self, batch: list[tuple[str, int, list[str]]], vectors: np.ndarray) -> None:
        """Add embedded documents, skipping those changed or removed since ``take_pending``."""
        if self._dirty:
            self._compact()
        keep_rows: list[int] = []
        owners: list[int] = []
        row = 0
        for doc_id, generation, passages in batch:
            n = len(passages)
            if self._generation.get(doc_id, 0) == generation and doc_id not in self._slot_of:
                slot = self._free_slots.pop() if self._free_slots else len(self._doc_of)
                if slot == len(self._doc_of):
                    self._doc_of.append(doc_id)
                else:
                    self._doc_of[slot] = doc_id
                self._slot_of[doc_id] = slot
                keep_rows.extend(range(row, row + n))
                owners.extend([slot] * n)
            row += n
        if keep_rows:
            self._append(vectors[keep_rows], np.asarray(owners, dtype=np.int64))

    def flush(self) -> None:
        """Embed every queued document now (one batched call) and drop rows of removed ones."""
        if self._dirty:
            self._compact()
        if self._pending:
            batch = self.take_pending()
            self.install(batch, self.embed_batch(batch))

    def _append(self, vectors: np.ndarray, owners: np.ndarray) -> None:
        need = self._rows + len(vectors)
        if need > len(self._matrix):
            capacity = max(need, 2 * len(self._matrix), 64)
            grown = np.zeros((capacity, self.embedder.dim), dtype=np.float32)
            grown[: self._rows] = self._matrix[: self._rows]
            self._matrix = grown
            grown_owner = np.full(capacity, -1, dtype=np.int64)
            grown_owner[: self._rows] = self._owner[: self._rows]
            self._owner = grown_owner
        self._matrix[self._rows : need] = vectors
        self._owner[self._rows : need] = owners
        self._rows = need

    def _compact(self) -> None:
        live = np.array([d is not None for d in self._doc_of], dtype=bool)
        owners = self._owner[: self._rows]
        keep = live[owners] if len(live) else np.zeros(0, dtype=bool)
        kept = int(keep.sum())
        self._matrix[:kept] = self._matrix[: self._rows][keep]
        self._owner[:kept] = owners[keep]
        self._owner[kept : self._rows] = -1
        self._rows = kept
        self._dirty = False

    def scores(self, query: str) -> tuple[np.ndarray, list[str | None]]:
        """Best-passage cosine per slot (``-inf`` for empty slots) and the slot -> doc id list."""
        self.flush()
        slots = len(self._doc_of)
        best = np.full(slots, -np.inf, dtype=np.float32)
        if self._rows:
            q = self.embedder.embed([query])[0]
            sims = self._matrix[: self._rows] @ q
            np.maximum.at(best, self._owner[: self._rows], sims)
        return best, self._doc_of

    def search(self, query: str, depth: int) -> list[Hit]:
        best, docs = self.scores(query)
        live = np.isfinite(best)
        count = int(live.sum())
        if not count:
            return []
        depth = min(depth, count)
        masked = np.where(live, best, -np.inf)
        top = np.argpartition(-masked, depth - 1)[:depth]
        top = top[np.argsort(-masked[top], kind="stable")]
        return [Hit(docs[i], float(masked[i])) for i in top]  # type: ignore[arg-type]


class DocumentIndex:
    """Keyword, semantic and hybrid search over the same set of documents."""

    def __init__(self, embedder: Embedder | None = None) -> None:
        self.keywords = KeywordIndex()
        self.vectors = VectorIndex(embedder or default_embedder())

    def __len__(self) -> int:
        return len(self.keywords)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.keywords._lengths

    def add(self, doc: Document) -> None:
        self.keywords.add(doc.doc_id, doc.keywords)
        self.vectors.add(doc.doc_id, doc.passages)

    def add_many(self, docs: Iterable[Document]) -> None:
        for doc in docs:
            self.add(doc)

    def remove(self, doc_id: str) -> None:
        self.keywords.remove(doc_id)
        self.vectors.remove(doc_id)

    def search_text(self, query: str, limit: int, offset: int = 0) -> list[Hit]:
        """BM25 ranking; documents without any query term are not returned."""
        return self.keywords.search(query)[offset : offset + limit]

    def search_semantic(self, query: str, limit: int, offset: int = 0) -> list[Hit]:
        """Cosine of the best passage plus a bounded keyword boost (BM25 scaled to [0, 1]).

        Static embeddings carry the meaning of a paraphrase; the keyword term breaks ties in
        favour of documents that share the query's rare words (names, tags).
        """
        best, docs = self.vectors.scores(query)
        if not len(best):
            return []
        fused = best.astype(np.float64, copy=True)
        keyword = self.keywords.scores(query)
        if keyword:
            top = max(keyword.values()) or 1.0
            slot_of = self.vectors._slot_of
            for doc_id, score in keyword.items():
                slot = slot_of.get(doc_id)
                if slot is not None:
                    fused[slot] += KEYWORD_WEIGHT * score / top
        live = int(np.isfinite(fused).sum())
        want = min(offset + limit, live)
        if want <= 0:
            return []
        top_slots = np.argpartition(-fused, want - 1)[:want]
        top_slots = top_slots[np.argsort(-fused[top_slots], kind="stable")]
        return [Hit(docs[i], float(fused[i])) for i in top_slots[offset:]]  # type: ignore[arg-type]


# -- A2A AgentCards as documents -------------------------------------------------------------------


def agent_card_document(doc_id: str, card: dict[str, Any]) -> Document:
    """An AgentCard's searchable text: name, description, and each skill's name, description,
    tags and examples (keywords weigh names and tags twice)."""
    name = str(card.get("name") or "")
    description = str(card.get("description") or "")
    keywords = [name, name, description]
    passages = [f"{name}. {description}"]
    for skill in card.get("skills") or ():
        if not isinstance(skill, dict):
            continue
        s_name = str(skill.get("name") or "")
        s_desc = str(skill.get("description") or "")
        tags = [str(t) for t in skill.get("tags") or () if isinstance(t, str)]
        examples = [str(e) for e in skill.get("examples") or () if isinstance(e, str)]
        keywords.extend([s_name, s_desc, *tags, *tags, *examples])
        passages.append(f"{s_name}. {s_desc}. {', '.join(tags)}")
        passages.extend(examples)
    return Document(doc_id, keywords, passages)
