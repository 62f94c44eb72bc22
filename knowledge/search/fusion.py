"""Fusing a keyword and a vector result list into one ranking: reciprocal rank fusion or weighted scores.

Both give a relevance in 0..1 so a knowledge base's score threshold means the same in every mode: RRF's
sum is divided by its largest possible value (first in both lists), weighted scores min-max normalise the
keyword scores (ts_rank / BM25 have no fixed scale) and take cosine similarity as it is.
"""

from __future__ import annotations

from knowledge.search.base import ScoredChunk

RRF_K = 60


def fuse(
    keyword: list[tuple[int, float]],
    vector: list[tuple[int, float]],
    *,
    fusion: str = "rrf",
    keyword_weight: float = 0.4,
    rrf_k: int = RRF_K,
) -> list[ScoredChunk]:
    """`keyword` and `vector` are (chunk id, score) lists, best first. Returns the union, best first."""
    hits: dict[int, ScoredChunk] = {}
    for rank, (chunk_id, score) in enumerate(keyword, start=1):
        hits[chunk_id] = ScoredChunk(chunk_id=chunk_id, score=0.0, keyword_score=score, keyword_rank=rank)
    for rank, (chunk_id, score) in enumerate(vector, start=1):
        hit = hits.setdefault(chunk_id, ScoredChunk(chunk_id=chunk_id, score=0.0))
        hit.vector_score, hit.vector_rank = score, rank
    lists = int(bool(keyword)) + int(bool(vector))
    if fusion == "weighted":
        kw_scores = [score for _, score in keyword]
        low, high = (min(kw_scores), max(kw_scores)) if kw_scores else (0.0, 0.0)
        kw_weight = keyword_weight if keyword and vector else (1.0 if keyword else 0.0)
        for hit in hits.values():
            kw = 0.0
            if hit.keyword_score is not None:
                kw = 1.0 if high == low else (hit.keyword_score - low) / (high - low)
            vec = max(0.0, hit.vector_score or 0.0)
            hit.score = kw_weight * kw + (1 - kw_weight) * vec
    else:
        best = lists / (rrf_k + 1) if lists else 1.0
        for hit in hits.values():
            total = sum(1 / (rrf_k + rank) for rank in (hit.keyword_rank, hit.vector_rank) if rank is not None)
            hit.score = total / best
    return sorted(hits.values(), key=lambda h: (-h.score, h.chunk_id))
