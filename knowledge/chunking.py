"""Cutting extracted blocks into chunks of a bounded token count, and preparing chunk text for keyword search.

Token counts here are estimates (see `count_tokens`): chunk sizes are budgets for embedding models whose
exact tokenizers we do not load, so a chunk of `size` estimated tokens may be a little over or under in
the model's own count.
"""

from __future__ import annotations

import functools
import logging
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from knowledge.extraction import Block

HEADING_SEPARATOR = " \u203a "  # a single right-pointing angle quotation mark
MAX_HEADING_PATH = 500

_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ffff"
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_WORD = re.compile(rf"[^\W{_CJK}]+")  # letters, digits and underscores, CJK excluded
_UNIT = re.compile(rf"[^\W{_CJK}]+|\S")  # what count_tokens counts: a word, or any other visible character
# A sentence ends at . ! ? followed by space (after any closing quote or bracket), at the ideographic full
# stop or a full-width ! ? (CJK text puts no space after them), or at a line break.
_SENTENCE_END = re.compile(
    "[.!?]+[\"'\u201d\u2019)\\]]*\\s+|[\u3002\uff01\uff1f]+[\u201d\u2019\u300d\u300f\uff09]*\\s*|\n\\s*"
)
_TABLE_DELIMITER = re.compile(r"^\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?$")


def count_tokens(text: str) -> int:
    """An estimate of a text's token count, without a tokenizer model.

    Each CJK character and each punctuation mark or symbol counts 1; a run of letters and digits counts
    1 per 4 characters, rounded up. Appending text never lowers the count, and joining texts never gives
    more than the sum of their counts.
    """
    words = _WORD.findall(text)
    symbols = len("".join(text.split())) - sum(map(len, words))
    return symbols + sum((len(word) + 3) // 4 for word in words)


@dataclass
class ChunkDraft:
    position: int
    text: str
    token_count: int
    page: int | None
    heading_path: str  # the headings above the chunk joined by HEADING_SEPARATOR, at most 500 characters


def chunk_blocks(blocks: list[Block], *, size: int, overlap: int, strategy: str = "structure") -> list[ChunkDraft]:
    """Chunks of at most `size` estimated tokens, positions 0..n-1, none empty; the same input gives the same
    chunks.

    "structure" follows the document: level 1-2 headings start a chunk, paragraphs and tables stay whole
    when they fit (else paragraphs split at sentences, code at lines, tables by rows with their header
    repeated), and a chunk continuing a section starts with the last ~`overlap` tokens of the previous
    one (never across a heading, never into or out of a table). Headings are not in the text but in
    `heading_path`, except a level 3+ heading met inside a chunk, which stays where it occurs. A new page
    starts a new chunk, so a chunk's page is the page its text is on (the overlap may come from the page
    before).

    "fixed" joins all text, headings included, and cuts windows of `size` tokens overlapping by
    `overlap`, at word boundaries; a window's page and path are those where it starts.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got size={size}, overlap={overlap}")
    if strategy == "structure":
        return _StructureChunker(size=size, overlap=overlap).run(blocks)
    if strategy == "fixed":
        return _fixed_windows(blocks, size=size, overlap=overlap)
    raise ValueError(f"unknown chunk strategy {strategy!r}")


def search_text(text: str, language: str) -> str:
    """The text to hand to PostgreSQL's to_tsvector: Chinese is segmented into space-separated words (its
    parser would otherwise take a whole run of characters as one lexeme); other text is returned as is."""
    if language != "zh" and not _HAN.search(text):
        return text
    return " ".join(word for word in _jieba().cut_for_search(text) if word.strip())


@functools.cache
def _jieba() -> ModuleType:
    # Imported on first use: loading its dictionary takes about a second.
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


class _Outline:
    """The headings above the current block; a heading of level n replaces those of level n and deeper."""

    def __init__(self) -> None:
        self.headings: list[tuple[int, str]] = []

    def enter(self, level: int, text: str) -> None:
        level = max(level, 1)
        while self.headings and self.headings[-1][0] >= level:
            self.headings.pop()
        self.headings.append((level, " ".join(text.split())))

    @property
    def path(self) -> str:
        path = HEADING_SEPARATOR.join(text for _, text in self.headings)
        return path if len(path) <= MAX_HEADING_PATH else path[: MAX_HEADING_PATH - 1] + "…"


class _StructureChunker:
    def __init__(self, *, size: int, overlap: int) -> None:
        self.size = size
        self.overlap = overlap
        self.outline = _Outline()
        self.chunks: list[ChunkDraft] = []
        # The chunk being filled: its parts joined make its text, `tokens` bounds their estimated count.
        self.parts: list[str] = []
        self.tokens = 0
        self.page: int | None = None
        self.path = ""
        self.last_was_table = False
        # A level 3+ heading met mid-chunk: written into the chunk if the next piece still fits there,
        # dropped if that piece starts a new chunk (whose heading path then names it).
        self.pending_heading = ""
        # The end of the last chunk, at most `overlap` tokens, for the next chunk to start with; only ever
        # taken from one section (the text under one heading) and cleared when the next heading comes.
        self.tail = ""
        # Where the current section's text starts in the chunk being filled, and whether a heading came
        # after its last piece (so nothing in it belongs to the section that follows).
        self.section_start = 0
        self.section_opened = False

    def run(self, blocks: Iterable[Block]) -> list[ChunkDraft]:
        for block in blocks:
            text = block.text.strip("\n").rstrip() if block.kind == "code" else block.text.strip()
            if not text.strip():
                continue
            if block.kind == "heading":
                self._heading(block.level, text)
            elif block.kind == "table":
                self._add_pieces(_table_pieces(text, self.size), block.page, table=True)
            elif block.kind == "code":
                self._add_pieces(_line_pieces(text, self.size), block.page)
            else:
                self._add_pieces(_prose_pieces(text, self.size), block.page)
        self._flush(keep_tail=False)
        return self.chunks

    def _heading(self, level: int, text: str) -> None:
        self.outline.enter(level, text)
        self.section_opened = True
        self.tail = ""
        if level <= 2:
            self._flush(keep_tail=False)
        elif self.parts:
            self.pending_heading = f"{self.pending_heading}\n\n{text}" if self.pending_heading else text

    def _add_pieces(self, pieces: Iterable[tuple[str, int]], page: int | None, *, table: bool = False) -> None:
        # Pieces of one paragraph or code block carry their own whitespace; table pieces are whole tables.
        for index, (text, tokens) in enumerate(pieces):
            self._add(text, tokens, page, new_block=table or index == 0, table=table)

    def _add(self, text: str, tokens: int, page: int | None, *, new_block: bool, table: bool) -> None:
        heading = self.pending_heading
        heading_tokens = count_tokens(heading) if heading else 0
        new_page = page is not None and self.page is not None and page != self.page
        if self.parts and (new_page or self.tokens + heading_tokens + tokens > self.size):
            # A page starts a chunk too, so a citation's page number is the page the passage is on.
            self._flush(keep_tail=not (table or self.last_was_table))
        if not self.parts:
            self.page, self.path = page, self.outline.path
            tail = "" if table else self._take_tail(tokens)
            if tail:
                self.parts = [tail.rstrip(), "\n\n"] if new_block else [tail]
                self.tokens = count_tokens(tail)
        elif new_block:
            self.parts[-1] = self.parts[-1].rstrip()
            self.parts.append("\n\n")
            if self.pending_heading:
                self.parts.append(self.pending_heading + "\n\n")
                self.tokens += heading_tokens
        self.pending_heading = ""
        if self.section_opened:
            self.section_start = sum(map(len, self.parts))
            self.section_opened = False
        self.parts.append(text)
        self.tokens += tokens
        self.last_was_table = table

    def _take_tail(self, tokens: int) -> str:
        tail, self.tail = self.tail, ""
        budget = self.size - tokens
        if not tail or budget <= 0:
            return ""
        return tail if count_tokens(tail) <= budget else _tail_text(tail, budget)

    def _flush(self, *, keep_tail: bool) -> None:
        joined = "".join(self.parts)
        text = joined.strip()
        if text:
            self.chunks.append(
                ChunkDraft(
                    position=len(self.chunks),
                    text=text,
                    token_count=count_tokens(text),
                    page=self.page,
                    heading_path=self.path,
                )
            )
        section_text = joined[self.section_start :]
        keep_tail = keep_tail and not self.section_opened and bool(section_text.strip()) and self.overlap > 0
        self.tail = _tail_text(section_text, self.overlap) if keep_tail else ""
        self.parts, self.tokens, self.pending_heading, self.section_start = [], 0, "", 0


def _prose_pieces(text: str, size: int) -> Iterator[tuple[str, int]]:
    """The text whole if it fits, else its sentences, and any sentence still too big cut between words."""
    tokens = count_tokens(text)
    if tokens <= size:
        yield text, tokens
        return
    for sentence in _sentences(text):
        tokens = count_tokens(sentence)
        if tokens <= size:
            yield sentence, tokens
        else:
            yield from _cut(sentence, size)


def _line_pieces(text: str, size: int) -> Iterator[tuple[str, int]]:
    """The text whole if it fits, else line by line, a line still too big cut between words."""
    tokens = count_tokens(text)
    if tokens <= size:
        yield text, tokens
        return
    for line in text.splitlines(keepends=True):
        tokens = count_tokens(line)
        if tokens <= size:
            yield line, tokens
        else:
            yield from _cut(line, size)


def _table_pieces(text: str, size: int) -> Iterator[tuple[str, int]]:
    """The table whole if it fits, else runs of whole rows, each led by the header row(s)."""
    tokens = count_tokens(text)
    if tokens <= size:
        yield text, tokens
        return
    lines = text.split("\n")
    head = 2 if len(lines) > 1 and _TABLE_DELIMITER.match(lines[1].strip()) else 1
    header = "\n".join(lines[:head])
    header_tokens = count_tokens(header)
    if header_tokens >= size:
        yield from _line_pieces(text, size)
        return
    rows: list[str] = []
    piece_tokens = header_tokens
    for row in lines[head:]:
        tokens = count_tokens(row)
        if header_tokens + tokens > size:
            # A row too big to travel with the header: alone, and cut only if it exceeds a chunk by itself.
            if rows:
                yield "\n".join([header, *rows]), piece_tokens
                rows, piece_tokens = [], header_tokens
            yield from _line_pieces(row, size)
            continue
        if piece_tokens + tokens > size:
            yield "\n".join([header, *rows]), piece_tokens
            rows, piece_tokens = [], header_tokens
        rows.append(row)
        piece_tokens += tokens
    if rows:
        yield "\n".join([header, *rows]), piece_tokens


def _sentences(text: str) -> Iterator[str]:
    """Consecutive slices of `text`, each ending after a sentence end or a line break (with what follows)."""
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if match.end() > start:
            yield text[start : match.end()]
            start = match.end()
    if start < len(text):
        yield text[start:]


def _cut(text: str, size: int) -> Iterator[tuple[str, int]]:
    """Slices of at most `size` tokens, cut before a word or CJK character; a single run of letters longer
    than a chunk is cut every 4 * size characters."""
    start = tokens = 0
    for match in _UNIT.finditer(text):
        unit = (match.end() - match.start() + 3) // 4
        if unit > size:
            if tokens:
                yield text[start : match.start()], tokens
            step = 4 * size
            for offset in range(match.start(), match.end(), step):
                end = min(offset + step, match.end())
                yield text[offset:end], (end - offset + 3) // 4
            start, tokens = match.end(), 0
            continue
        if tokens + unit > size:
            yield text[start : match.start()], tokens
            start, tokens = match.start(), 0
        tokens += unit
    if text[start:].strip():
        yield text[start:], tokens


def _tail_text(text: str, limit: int) -> str:
    """The end of `text` counting at most `limit` tokens, starting at a sentence when one starts in its
    first half, else at a word (or CJK character)."""
    tail = _last_units(text, limit)
    boundary = _SENTENCE_END.search(tail, 0, len(tail) // 2)
    return tail[boundary.end() :] if boundary and tail[boundary.end() :].strip() else tail


def _last_units(text: str, limit: int) -> str:
    """The longest end of `text` that starts at a unit and counts at most `limit` tokens."""
    window = 8 * limit + 64
    while True:
        window_start = max(0, len(text) - window)
        cut = len(text)
        total = 0
        for match in reversed(list(_UNIT.finditer(text, window_start))):
            total += (match.end() - match.start() + 3) // 4
            if total > limit:
                return text[cut:]
            cut = match.start()
        if window_start == 0:
            return text[cut:]
        window *= 2  # every unit fitted: the tail may reach further back than the window


def _fixed_windows(blocks: list[Block], *, size: int, overlap: int) -> list[ChunkDraft]:
    outline = _Outline()
    texts: list[str] = []
    starts: list[int] = []  # where each block's text starts in the joined text
    pages: list[int | None] = []
    paths: list[str] = []
    offset = 0
    for block in blocks:
        text = block.text.strip()
        if not text:
            continue
        if block.kind == "heading":
            outline.enter(block.level, text)
        texts.append(text)
        starts.append(offset)
        pages.append(block.page)
        paths.append(outline.path)
        offset += len(text) + 2
    joined = "\n\n".join(texts)
    spans, weights = _units(joined, size)
    prefix = [0, *accumulate(weights)]
    chunks: list[ChunkDraft] = []
    first = 0
    while first < len(spans):
        end = bisect_right(prefix, prefix[first] + size) - 1  # the window holds units first..end-1
        text = joined[spans[first][0] : spans[end - 1][1]]
        block = bisect_right(starts, spans[first][0]) - 1
        chunks.append(ChunkDraft(len(chunks), text, count_tokens(text), pages[block], paths[block]))
        if end >= len(spans):
            break
        first = max(bisect_left(prefix, prefix[end] - overlap), first + 1)
    return chunks


def _units(text: str, size: int) -> tuple[list[tuple[int, int]], list[int]]:
    """The spans and token weights of `text`'s units, runs of letters longer than a chunk cut into pieces."""
    spans: list[tuple[int, int]] = []
    weights: list[int] = []
    step = 4 * size
    for match in _UNIT.finditer(text):
        start, end = match.span()
        if end - start <= step:
            spans.append((start, end))
            weights.append((end - start + 3) // 4)
            continue
        for offset in range(start, end, step):
            spans.append((offset, min(offset + step, end)))
            weights.append((min(offset + step, end) - offset + 3) // 4)
    return spans, weights
