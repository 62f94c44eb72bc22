"""The knowledge-search interface agents use. The knowledge app provides the search itself (issue:
knowledge bases); it registers a `KnowledgeSearcher` here with `knowledge_searcher_register`.

A searcher returns hits with document, page and chunk ids so answers can cite them; the tool formats
them for the model and records them on the run context as citations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agents.tools.registry import RunContext


@dataclass
class KnowledgeHit:
    document_id: int
    document_title: str
    chunk_id: int
    text: str
    score: float
    page: int | None = None
    knowledge_base: str = ""


class KnowledgeSearcher(Protocol):
    def __call__(self, *, query: str, knowledge_bases: list[str], top_k: int) -> list[KnowledgeHit]: ...


class KnowledgeBaseResolver(Protocol):
    def __call__(self, slugs: list[str]) -> set[str]:
        """The slugs, of those given, that name knowledge bases of the current tenant."""


_searcher: KnowledgeSearcher | None = None
_resolver: KnowledgeBaseResolver | None = None


def knowledge_searcher_register(searcher: KnowledgeSearcher, resolver: KnowledgeBaseResolver | None = None) -> None:
    global _searcher, _resolver
    _searcher, _resolver = searcher, resolver


def knowledge_bases_missing(slugs: list[str]) -> list[str]:
    """The slugs that name no knowledge base of the current tenant (none when no knowledge app is installed)."""
    if _resolver is None or not slugs:
        return []
    found = _resolver(list(slugs))
    return [slug for slug in slugs if slug not in found]


def knowledge_search_run(*, query: str, knowledge_bases: list[str], top_k: int, context: RunContext) -> str:
    if _searcher is None:
        return "Knowledge search is not available on this platform yet: answer from your own knowledge and say so."
    hits = _searcher(query=query, knowledge_bases=knowledge_bases, top_k=top_k)
    if not hits:
        return "No relevant passages were found."
    lines = []
    for hit in hits:
        index = len(context.citations) + 1
        context.citations.append({"index": index, **asdict(hit)})
        page = f", page {hit.page}" if hit.page else ""
        lines.append(f"[{index}] {hit.document_title}{page}:\n{hit.text}")
    return "Cite passages by their [number].\n\n" + "\n\n".join(lines)
