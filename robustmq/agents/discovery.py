"""Offline discovery over documents: BM25 keyword ranking fused with sentence embeddings.

Generic over "documents" (agents, tools, ...): a document is an id, keyword fields and passages
to embed. The embedder sits behind ``Embedder``; the default runs wordllama on the CPU from the
weights inside its wheel and never touches the network. numpy and the model load on first use
(a broker with nothing to find never pays for them: about 70 MiB of RSS).
"""

from __future__ import annotations

import math
import os
import re
import threading
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

# Searches are small matrix-vector products on the event loop: BLAS threads only add
# synchronisation (several times slower on a busy 2-core machine). Effective when numpy is first
# imported after this module (here or by wordllama), as it is in the broker.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


class _NumpyOnFirstUse:
    """Stands for numpy until the first attribute is read: that imports numpy (about 11 MiB and
    0.2 s) and puts the module itself in this module's globals, so later uses cost nothing."""

    def __getattr__(self, name: str) -> Any:
        import numpy

        globals()["np"] = numpy
        return getattr(numpy, name)


if TYPE_CHECKING:
    import numpy as np
else:
    np = _NumpyOnFirstUse()

# semantic mode: weight of the keyword score (scaled to [0, 1]) added to the cosine similarity
KEYWORD_WEIGHT = 0.1
# semantic mode: how many candidates each ranking contributes to the fusion
FUSION_DEPTH = 50
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
    """BM25 (k1 = 1.2, b = 0.75) over an inverted index kept in memory.

    Postings are dicts (cheap updates); each term also gets numpy arrays of (document slot,
    term frequency), built on first use after a change, so a query is a few vector operations
    per term whatever the number of documents.
    """

    K1 = 1.2
    B = 0.75

    def __init__(self) -> None:
        self._postings: dict[str, dict[int, int]] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._terms: dict[str, tuple[str, ...]] = {}
        self._slot_of: dict[str, int] = {}
        self._doc_of: list[str | None] = []
        self._free_slots: list[int] = []
        # document length per slot: a plain float32 array, so adding needs no numpy (a search
        # views it as a numpy array without copying)
        self._lengths = array("f")
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._slot_of

    def add(self, doc_id: str, texts: Iterable[str]) -> None:
        self.remove(doc_id)
        counts: dict[str, int] = {}
        length = 0
        for text in texts:
            for term in tokenize(text):
                counts[term] = counts.get(term, 0) + 1
                length += 1
        slot = self._free_slots.pop() if self._free_slots else len(self._doc_of)
        if slot == len(self._doc_of):
            self._doc_of.append(doc_id)
            self._lengths.append(length)
        else:
            self._doc_of[slot] = doc_id
            self._lengths[slot] = length
        self._slot_of[doc_id] = slot
        for term, tf in counts.items():
            self._postings.setdefault(term, {})[slot] = tf
            self._arrays.pop(term, None)
        self._terms[doc_id] = tuple(counts)
        self._total_length += length

    def remove(self, doc_id: str) -> None:
        terms = self._terms.pop(doc_id, None)
        if terms is None:
            return
        slot = self._slot_of.pop(doc_id)
        for term in terms:
            posting = self._postings[term]
            del posting[slot]
            self._arrays.pop(term, None)
            if not posting:
                del self._postings[term]
        self._total_length -= int(self._lengths[slot])
        self._lengths[slot] = 0
        self._doc_of[slot] = None
        self._free_slots.append(slot)

    def _term_arrays(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        arrays = self._arrays.get(term)
        if arrays is None:
            posting = self._postings.get(term)
            if not posting:
                return None
            slots = np.fromiter(posting.keys(), dtype=np.int64, count=len(posting))
            tfs = np.fromiter(posting.values(), dtype=np.float32, count=len(posting))
            arrays = self._arrays[term] = (slots, tfs)
        return arrays

    def slot_scores(self, query: str) -> np.ndarray | None:
        """BM25 score per slot (0 where no query term occurs), or None when nothing matches."""
        n = len(self._slot_of)
        if not n:
            return None
        lengths = np.frombuffer(self._lengths, dtype=np.float32)
        avg = self._total_length / n or 1.0
        k1, b = self.K1, self.B
        scores: np.ndarray | None = None
        for term in set(tokenize(query)):
            arrays = self._term_arrays(term)
            if arrays is None:
                continue
            slots, tfs = arrays
            idf = math.log(1.0 + (n - len(slots) + 0.5) / (len(slots) + 0.5))
            norm = k1 * (1.0 - b + b * lengths[slots] / avg)
            if scores is None:
                scores = np.zeros(len(self._doc_of), dtype=np.float32)
            scores[slots] += idf * tfs * (k1 + 1.0) / (tfs + norm)
        return scores

    def scores(self, query: str) -> dict[str, float]:
        scores = self.slot_scores(query)
        if scores is None:
            return {}
        hit = np.flatnonzero(scores > 0)
        return {self._doc_of[i]: float(scores[i]) for i in hit}  # type: ignore[misc]

    def search(self, query: str, limit: int | None = None, offset: int = 0) -> list[Hit]:
        scores = self.slot_scores(query)
        if scores is None:
            return []
        hit = np.flatnonzero(scores > 0)
        want = len(hit) if limit is None else min(len(hit), offset + limit)
        if want <= 0:
            return []
        if want < len(hit):
            part = hit[np.argpartition(-scores[hit], want - 1)[:want]]
        else:
            part = hit
        ids = [self._doc_of[i] for i in part]
        ranked = sorted(zip(ids, scores[part].tolist(), strict=True), key=lambda kv: (-kv[1], kv[0]))
        return [Hit(d, s) for d, s in ranked[offset:want]]  # type: ignore[arg-type]


class VectorIndex:
    """Passage vectors in one growable matrix; a document scores as its best passage.

    A search is two stages: the mean vector of every document ranks them coarsely (one small
    matrix product), then the passages of the best ``COARSE_CANDIDATES`` documents are scored.
    Each document owns one contiguous run of rows (appended together, compaction keeps order).
    """

    COARSE_CANDIDATES = 200

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        # the arrays below are allocated by the first ``install`` (numpy loads on first use)
        self._matrix: np.ndarray = None  # type: ignore[assignment]
        self._owner: np.ndarray = None  # type: ignore[assignment]  # row -> document slot
        self._rows = 0
        self._slot_of: dict[str, int] = {}
        self._doc_of: list[str | None] = []
        self._free_slots: list[int] = []
        self._pending: dict[str, list[str]] = {}
        self._generation: dict[str, int] = {}
        self._dirty = False  # rows of removed documents still in the matrix
        self._group_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        self._centroids: np.ndarray = None  # type: ignore[assignment]  # per slot
        self._ranges: np.ndarray = None  # type: ignore[assignment]  # per slot: first row, end row
        self._live: np.ndarray = None  # type: ignore[assignment]  # per slot

    def _allocate(self) -> None:
        dim = self.embedder.dim
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._owner = np.zeros(0, dtype=np.int64)
        self._centroids = np.zeros((0, dim), dtype=np.float32)
        self._ranges = np.zeros((0, 2), dtype=np.int64)
        self._live = np.zeros(0, dtype=bool)

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
            self._live[slot] = False
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
        if self._matrix is None:
            self._allocate()
        need = self._rows + len(vectors)
        if need > len(self._matrix):
            capacity = max(need, 2 * len(self._matrix), 64)
            grown = np.zeros((capacity, self.embedder.dim), dtype=np.float32)
            grown[: self._rows] = self._matrix[: self._rows]
            self._matrix = grown
            grown_owner = np.full(capacity, -1, dtype=np.int64)
            grown_owner[: self._rows] = self._owner[: self._rows]
            self._owner = grown_owner
        self._ensure_slots(len(self._doc_of))
        first = self._rows
        self._matrix[first:need] = vectors
        self._owner[first:need] = owners
        self._rows = need
        self._group_cache = None
        starts = np.concatenate(([0], np.flatnonzero(owners[1:] != owners[:-1]) + 1))
        ends = np.append(starts[1:], len(owners))
        slots = owners[starts]
        sums = np.add.reduceat(vectors, starts, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        self._centroids[slots] = sums / np.where(norms > 0, norms, 1.0)
        self._ranges[slots, 0] = first + starts
        self._ranges[slots, 1] = first + ends
        self._live[slots] = True

    def _ensure_slots(self, count: int) -> None:
        if count <= len(self._live):
            return
        capacity = max(count, 2 * len(self._live), 64)
        centroids = np.zeros((capacity, self.embedder.dim), dtype=np.float32)
        centroids[: len(self._centroids)] = self._centroids
        ranges = np.zeros((capacity, 2), dtype=np.int64)
        ranges[: len(self._ranges)] = self._ranges
        live = np.zeros(capacity, dtype=bool)
        live[: len(self._live)] = self._live
        self._centroids, self._ranges, self._live = centroids, ranges, live

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
        self._group_cache = None
        if kept:
            starts, slots = self._groups()
            self._ranges[slots, 0] = starts
            self._ranges[slots, 1] = np.append(starts[1:], kept)

    def _groups(self) -> tuple[np.ndarray, np.ndarray]:
        """Row runs of the matrix, one per document: their starts and their slots."""
        if self._group_cache is None or self._group_cache[0] != self._rows:
            owner = self._owner[: self._rows]
            starts = np.concatenate(([0], np.flatnonzero(owner[1:] != owner[:-1]) + 1))
            self._group_cache = (self._rows, starts, owner[starts])
        return self._group_cache[1], self._group_cache[2]

    def query_vector(self, text: str) -> np.ndarray:
        self.flush()
        return self.embedder.embed([text])[0]

    def best_passage(self, q: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Cosine of each given slot's best passage with ``q`` (``-inf`` for empty slots)."""
        out = np.full(len(slots), -np.inf, dtype=np.float32)
        if not len(slots):
            return out
        live = self._live[slots]
        chosen = slots[live]
        if not len(chosen):
            return out
        starts = self._ranges[chosen, 0]
        lengths = self._ranges[chosen, 1] - starts
        offsets = np.cumsum(lengths) - lengths
        rows = np.arange(int(lengths.sum())) - np.repeat(offsets, lengths) + np.repeat(starts, lengths)
        sims = self._matrix[rows] @ q
        out[live] = np.maximum.reduceat(sims, offsets)
        return out

    def search(self, query: str, depth: int) -> list[Hit]:
        q = self.query_vector(query)
        return self.search_vector(q, depth)

    def search_vector(self, q: np.ndarray, depth: int) -> list[Hit]:
        slots_total = len(self._doc_of)
        if not self._rows or not slots_total:
            return []
        live = self._live[:slots_total]
        want = max(self.COARSE_CANDIDATES, depth)
        if want < int(live.sum()):
            coarse = self._centroids[:slots_total] @ q
            coarse[~live] = -np.inf
            candidates = np.argpartition(-coarse, want - 1)[:want]
        else:
            candidates = np.flatnonzero(live)
        best = self.best_passage(q, candidates)
        order = np.argsort(-best, kind="stable")[:depth]
        docs = self._doc_of
        return [Hit(docs[candidates[i]], float(best[i])) for i in order if np.isfinite(best[i])]  # type: ignore[misc]


class DocumentIndex:
    """Keyword, semantic and hybrid search over the same set of documents."""

    def __init__(self, embedder: Embedder | None = None) -> None:
        self.keywords = KeywordIndex()
        self.vectors = VectorIndex(embedder or default_embedder())

    def __len__(self) -> int:
        return len(self.keywords)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.keywords

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
        return self.keywords.search(query, limit, offset)

    def search_semantic(self, query: str, limit: int, offset: int = 0) -> list[Hit]:
        """Cosine of the best passage plus a bounded keyword boost (BM25 scaled to [0, 1]).

        Static embeddings carry the meaning of a paraphrase; the keyword term breaks ties in
        favour of documents that share the query's rare words (names, tags). Candidates are the
        top of each ranking, so the cost does not grow with the number of keyword matches.
        """
        depth = max(FUSION_DEPTH, offset + limit)
        vectors = self.vectors
        q = vectors.query_vector(query)
        vector_hits = vectors.search_vector(q, depth)
        keyword_hits = self.keywords.search(query, depth)
        if not vector_hits and not keyword_hits:
            return []
        top_keyword = keyword_hits[0].score if keyword_hits else 1.0
        keyword = {h.doc_id: h.score / top_keyword for h in keyword_hits}
        fused = {h.doc_id: h.score + KEYWORD_WEIGHT * keyword.get(h.doc_id, 0.0) for h in vector_hits}
        extra = [d for d in keyword if d not in fused and d in vectors._slot_of]
        if extra:
            slots = np.array([vectors._slot_of[d] for d in extra], dtype=np.int64)
            for doc_id, cosine in zip(extra, vectors.best_passage(q, slots).tolist(), strict=True):
                fused[doc_id] = cosine + KEYWORD_WEIGHT * keyword[doc_id]
        ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
        return [Hit(d, s) for d, s in ranked[offset : offset + limit]]


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
