"""Chunking extracted blocks: sizes, boundaries, overlap, tables, pages, and the text given to full-text search."""

from __future__ import annotations

import itertools

import pytest

from knowledge.chunking import HEADING_SEPARATOR, ChunkDraft, chunk_blocks, count_tokens, search_text
from knowledge.extraction import Block


def heading(text: str, level: int, page: int | None = None) -> Block:
    return Block(kind="heading", text=text, level=level, page=page)


def paragraph(text: str, page: int | None = None) -> Block:
    return Block(kind="paragraph", text=text, page=page)


def sentences(prefix: str, count: int) -> str:
    return " ".join(f"{prefix} sentence number {index} ends here." for index in range(count))


def table(rows: int) -> Block:
    lines = ["| Name | Value |", "| --- | --- |"] + [f"| row {index} | value {index} |" for index in range(rows)]
    return Block(kind="table", text="\n".join(lines))


def path(*headings: str) -> str:
    return HEADING_SEPARATOR.join(headings)


def overlaps(previous: ChunkDraft, following: ChunkDraft) -> bool:
    """Whether `following` starts with the end of `previous` (from a word on, at least 5 characters)."""
    text = previous.text
    starts = [index for index in range(1, len(text) - 4) if text[index - 1].isspace() and not text[index].isspace()]
    return any(following.text.startswith(text[index:]) for index in starts)


def assert_well_formed(chunks: list[ChunkDraft], size: int) -> None:
    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text.strip() == chunk.text and chunk.text
        assert chunk.token_count == count_tokens(chunk.text) <= size


def test_count_tokens_estimates_latin_and_cjk() -> None:
    assert count_tokens("") == 0
    assert count_tokens("   \n ") == 0
    assert count_tokens("word") == 1
    assert count_tokens("words") == 2
    assert count_tokens("Hello, world!") == 2 + 1 + 2 + 1
    assert count_tokens("知识库") == 3
    assert count_tokens("用 Python 写") == 1 + 2 + 1


def test_count_tokens_never_decreases_as_text_grows() -> None:
    # given
    text = "Nexent 平台 supports knowledge-bases, e.g. 知识库检索; 3.14159 tokens!"

    # when
    counts = [count_tokens(text[:end]) for end in range(len(text) + 1)]

    # then
    assert counts == sorted(counts)


def test_headings_of_level_one_and_two_start_chunks_and_set_the_path() -> None:
    # given
    blocks = [
        heading("Guide", 1),
        paragraph("Welcome."),
        heading("Installation", 2),
        paragraph("Run the installer."),
        heading("Linux", 3),
        paragraph("Use the package."),
        heading("Usage", 2),
        paragraph("Start it."),
    ]

    # when
    chunks = chunk_blocks(blocks, size=100, overlap=10)

    # then: the level-3 heading continues its chunk, written where it occurs
    assert [(chunk.heading_path, chunk.text) for chunk in chunks] == [
        ("Guide", "Welcome."),
        (path("Guide", "Installation"), "Run the installer.\n\nLinux\n\nUse the package."),
        (path("Guide", "Usage"), "Start it."),
    ]


def test_level_three_heading_opening_a_chunk_is_in_the_path_not_the_text() -> None:
    # given
    blocks = [heading("Guide", 1), heading("Linux", 3), paragraph("Use the package.")]

    # when
    chunks = chunk_blocks(blocks, size=100, overlap=10)

    # then
    assert [(chunk.heading_path, chunk.text) for chunk in chunks] == [(path("Guide", "Linux"), "Use the package.")]


def test_a_heading_replaces_those_of_its_level_and_deeper() -> None:
    # given
    blocks = [heading("A", 1), heading("B", 2), heading("C", 3), heading("D", 2), paragraph("Text.")]

    # when
    chunks = chunk_blocks(blocks, size=100, overlap=0)

    # then
    assert chunks[0].heading_path == path("A", "D")


def test_heading_path_is_capped_at_500_characters() -> None:
    # given
    blocks = [heading("x" * 300, 1), heading("y" * 300, 2), paragraph("Text.")]

    # when
    chunks = chunk_blocks(blocks, size=100, overlap=0)

    # then
    assert len(chunks[0].heading_path) == 500


def test_long_section_is_split_at_sentences_with_overlap() -> None:
    # given
    blocks = [heading("Guide", 1), paragraph(sentences("Alpha", 40))]

    # when
    chunks = chunk_blocks(blocks, size=60, overlap=15)

    # then
    assert len(chunks) > 3
    assert_well_formed(chunks, 60)
    for previous, following in itertools.pairwise(chunks):
        assert previous.text.endswith("ends here.")
        assert overlaps(previous, following)
        assert following.heading_path == "Guide"


def test_overlap_stays_within_a_section() -> None:
    # given
    blocks = [heading("One", 2), paragraph(sentences("Alpha", 10)), heading("Two", 2), paragraph(sentences("Beta", 10))]
    blocks += [heading("Three", 3), paragraph(sentences("Gamma", 10))]

    # when
    chunks = chunk_blocks(blocks, size=60, overlap=20)

    # then: each section's first chunk starts with its own first sentence, later ones with the overlap
    assert_well_formed(chunks, 60)
    assert [chunk.heading_path for chunk in chunks] == [path("One")] * 2 + [path("Two")] * 2 + [
        path("Two", "Three")
    ] * 2
    for previous, following in itertools.pairwise(chunks):
        if previous.heading_path == following.heading_path:
            assert overlaps(previous, following)
        else:
            assert not overlaps(previous, following)
            assert following.text.startswith(("Beta sentence number 0 ", "Gamma sentence number 0 "))


def test_overlap_after_a_heading_inside_a_chunk_comes_from_the_new_section_only() -> None:
    # given: a Gamma paragraph too big for one chunk, whose first sentence fits after the Beta sentences
    blocks = [heading("One", 2), paragraph(sentences("Beta", 5)), heading("Three", 3), paragraph(sentences("Gamma", 7))]

    # when
    chunks = chunk_blocks(blocks, size=60, overlap=20)

    # then
    assert chunks[0].text.endswith("Beta sentence number 4 ends here.\n\nThree\n\nGamma sentence number 0 ends here.")
    assert chunks[1].heading_path == path("One", "Three")
    assert chunks[1].text.startswith("Gamma sentence number 0 ends here. Gamma sentence number 1")
    assert "Beta" not in chunks[1].text


def test_paragraphs_are_kept_whole_when_they_fit() -> None:
    # given
    first, second = sentences("Alpha", 5), sentences("Beta", 5)

    # when
    chunks = chunk_blocks([paragraph(first), paragraph(second)], size=count_tokens(first) + 5, overlap=3)

    # then: the second starts a chunk of its own, led by the overlap from the first
    assert chunks[0].text == first
    assert chunks[1].text.endswith(second)
    assert overlaps(chunks[0], chunks[1])


def test_big_table_is_split_by_rows_with_the_header_in_every_piece() -> None:
    # given
    blocks = [paragraph(sentences("Alpha", 3)), table(60), paragraph("After the table.")]

    # when
    chunks = chunk_blocks(blocks, size=50, overlap=10)

    # then
    assert_well_formed(chunks, 50)
    pieces = [chunk for chunk in chunks if "| Name | Value |" in chunk.text]
    assert len(pieces) > 3
    rows: list[str] = []
    for piece in pieces:
        lines = piece.text.split("\n\n")[0].split("\n")
        assert lines[:2] == ["| Name | Value |", "| --- | --- |"]
        assert all(line.startswith("| row ") and line.endswith(" |") for line in lines[2:])
        rows += lines[2:]
    assert rows == [f"| row {index} | value {index} |" for index in range(60)]
    assert "Alpha" not in pieces[0].text
    assert chunks[-1].text == "After the table."  # no overlap taken from a table


def test_small_table_stays_whole_and_joins_its_neighbours() -> None:
    # when
    chunks = chunk_blocks([paragraph("Before."), table(2), paragraph("After.")], size=200, overlap=10)

    # then
    assert len(chunks) == 1
    assert chunks[0].text == f"Before.\n\n{table(2).text}\n\nAfter."


def test_a_new_page_starts_a_new_chunk_so_citations_name_the_right_page() -> None:
    # given
    blocks = [paragraph(sentences("Alpha", 3), page=1), paragraph(sentences("Beta", 3), page=2)]
    blocks += [paragraph(sentences("Gamma", 8), page=3)]

    # when
    chunks = chunk_blocks(blocks, size=60, overlap=0)

    # then: small pages are not merged into one chunk
    assert chunks[0].page == 1 and "Beta" not in chunks[0].text
    assert chunks[1].page == 2 and chunks[1].text.startswith("Beta")
    assert chunks[2].page == 3 and chunks[2].text.startswith("Gamma")
    assert {chunk.page for chunk in chunks[2:]} == {3}


def test_oversized_sentence_is_cut_between_words() -> None:
    # given
    words = " ".join(f"word{index}" for index in range(300))

    # when
    chunks = chunk_blocks([paragraph(words)], size=40, overlap=0)

    # then
    assert_well_formed(chunks, 40)
    assert " ".join(chunk.text for chunk in chunks) == words


def test_chinese_without_punctuation_is_cut_between_characters() -> None:
    # given
    text = "知识库检索系统" * 50

    # when
    chunks = chunk_blocks([paragraph(text)], size=64, overlap=0)

    # then
    assert_well_formed(chunks, 64)
    assert "".join(chunk.text for chunk in chunks) == text


def test_chinese_is_split_at_full_width_sentence_ends() -> None:
    # given
    text = "".join(f"这是第{index}句话。" for index in range(40))

    # when
    chunks = chunk_blocks([paragraph(text)], size=30, overlap=0)

    # then
    assert_well_formed(chunks, 30)
    assert all(chunk.text.endswith("。") for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks) == text


def test_run_of_letters_longer_than_a_chunk_is_cut() -> None:
    # given
    blob = "A" * 1000

    # when
    chunks = chunk_blocks([paragraph(blob)], size=50, overlap=10)

    # then
    assert_well_formed(chunks, 50)
    assert "".join(chunk.text for chunk in chunks) == blob


def test_code_block_is_kept_whole_when_it_fits_else_split_by_lines() -> None:
    # given
    small = "def main():\n    return 1"
    big = "\n".join(f"    value_{index} = compute({index})" for index in range(40))

    # when
    whole = chunk_blocks([Block(kind="code", text=small)], size=50, overlap=0)
    split = chunk_blocks([Block(kind="code", text=big)], size=50, overlap=0)

    # then
    assert [chunk.text for chunk in whole] == [small]
    assert_well_formed(split, 50)
    assert len(split) > 1
    lines = {line.strip() for line in big.split("\n")}
    assert all(line.strip() in lines for chunk in split for line in chunk.text.split("\n"))


def test_fixed_windows_overlap_and_carry_the_starting_page() -> None:
    # given
    blocks = [heading("Guide", 1, page=1), paragraph(sentences("Alpha", 20), page=1)]
    blocks += [paragraph(sentences("Beta", 20), page=2)]

    # when
    chunks = chunk_blocks(blocks, size=50, overlap=10, strategy="fixed")

    # then
    assert_well_formed(chunks, 50)
    assert chunks[0].text.startswith("Guide\n\nAlpha sentence number 0")
    assert all(chunk.heading_path == "Guide" for chunk in chunks)
    for previous, following in itertools.pairwise(chunks):
        assert overlaps(previous, following)
    assert [chunk.page for chunk in chunks] == sorted(chunk.page for chunk in chunks)
    assert chunks[-1].page == 2
    assert chunks[-1].text.endswith("Beta sentence number 19 ends here.")


def test_fixed_windows_without_overlap_cover_the_text_once() -> None:
    # given
    text = " ".join(f"w{index}" for index in range(500))

    # when
    chunks = chunk_blocks([paragraph(text)], size=30, overlap=0, strategy="fixed")

    # then
    assert " ".join(chunk.text for chunk in chunks) == text


@pytest.mark.parametrize("strategy", ["structure", "fixed"])
def test_chunking_is_deterministic_and_skips_empty_blocks(strategy: str) -> None:
    # given
    blocks = [paragraph("  "), heading("Guide", 1), paragraph(sentences("Alpha", 30)), Block(kind="code", text="\n")]

    # when
    first = chunk_blocks(blocks, size=40, overlap=8, strategy=strategy)
    second = chunk_blocks(blocks, size=40, overlap=8, strategy=strategy)

    # then
    assert first == second
    assert_well_formed(first, 40)


def test_no_blocks_give_no_chunks() -> None:
    assert chunk_blocks([], size=100, overlap=10) == []
    assert chunk_blocks([heading("Only a title", 1)], size=100, overlap=10) == []


@pytest.mark.parametrize(
    ("size", "overlap", "strategy"), [(0, 0, "structure"), (100, 100, "structure"), (100, -1, "fixed"), (100, 10, "x")]
)
def test_bad_arguments_are_refused(size: int, overlap: int, strategy: str) -> None:
    with pytest.raises(ValueError):
        chunk_blocks([paragraph("Text.")], size=size, overlap=overlap, strategy=strategy)


def test_search_text_segments_chinese_into_words() -> None:
    # when
    segmented = search_text("我们使用自然语言处理技术构建知识库检索系统", "zh")

    # then
    words = segmented.split(" ")
    assert len(words) >= 6
    assert {"自然语言", "知识库"} <= set(words)
    assert "" not in words


def test_search_text_segments_chinese_inside_other_text() -> None:
    # when
    segmented = search_text("Nexent 的知识库检索", "en")

    # then
    assert "知识库" in segmented.split(" ")
    assert "Nexent" in segmented.split(" ")


def test_search_text_leaves_other_languages_alone() -> None:
    text = "Knowledge bases, keyword search and embeddings."
    assert search_text(text, "en") == text
    assert search_text(text, "") == text
