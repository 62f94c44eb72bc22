"""Extraction from real files built with the same libraries people's tools use (fpdf2, python-docx, ...)."""

from __future__ import annotations

import io
import json
import zipfile

import docx
import openpyxl
import pptx
import pytest
from fpdf import FPDF
from pptx.util import Inches
from pypdf import PdfReader, PdfWriter
from pytest_django.fixtures import Settings

from knowledge.extraction import Block, ExtractionError, detect_language, extract

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def make_pdf(pages: list[str] | None = None) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages or []:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def encrypt_pdf(data: bytes, *, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx() -> bytes:
    document = docx.Document()
    document.add_heading("User guide", level=0)
    document.add_heading("Installation", level=1)
    document.add_paragraph("Download the installer and run it.")
    document.add_paragraph("Linux", style="List Bullet")
    document.add_paragraph("macOS", style="List Bullet")
    document.add_heading("Requirements", level=2)
    table = document.add_table(rows=3, cols=2)
    for row, values in zip(table.rows, [("Part", "Minimum"), ("RAM", "8 GB"), ("Disk", "20 GB")], strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    document.add_paragraph("Any recent CPU works.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_pptx() -> bytes:
    presentation = pptx.Presentation()
    first = presentation.slides.add_slide(presentation.slide_layouts[1])  # title and content
    first.shapes.title.text = "Quarterly results"
    first.placeholders[1].text = "Revenue grew by 12 percent."
    second = presentation.slides.add_slide(presentation.slide_layouts[5])  # title only
    second.shapes.title.text = "Regions"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(6), Inches(1)).table
    for (row, column), value in zip([(0, 0), (0, 1), (1, 0), (1, 1)], ["Region", "Sales", "Europe", "40"], strict=True):
        table.cell(row, column).text = value
    second.notes_slide.notes_text_frame.text = "Mention the new office."
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


def make_xlsx() -> bytes:
    workbook = openpyxl.Workbook()
    people = workbook.active
    people.title = "People"
    people.append(["Name", "Age"])
    for index in range(45):
        people.append([f"Person {index}", 20 + index])
    prices = workbook.create_sheet("Prices")
    prices.append(["Item", "Price"])
    prices.append(["Tea", 2.5])
    workbook.create_sheet("Empty")
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def add_zip_member(data: bytes, name: str, size: int) -> bytes:
    """`data` (a zip) with one more deflated member of `size` zero bytes, written in pieces."""
    out = io.BytesIO(data)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as archive, archive.open(name, "w") as member:
        piece = bytes(1024 * 1024)
        for _ in range(size // len(piece)):
            member.write(piece)
    return out.getvalue()


def kinds(blocks: list[Block]) -> list[str]:
    return [block.kind for block in blocks]


def error_code(data: bytes, content_type: str, name: str = "file") -> str:
    with pytest.raises(ExtractionError) as caught:
        extract(data, content_type=content_type, name=name)
    assert caught.value.message
    return caught.value.code


def test_pdf_keeps_page_numbers() -> None:
    # given
    data = make_pdf([f"Page {n} covers topic {n}. It has a second sentence." for n in (1, 2, 3)])

    # when
    extracted = extract(data, content_type=PDF, name="guide.pdf")

    # then
    assert extracted.pages == 3
    assert extracted.language == "en"
    assert [block.page for block in extracted.blocks] == [1, 2, 3]
    assert kinds(extracted.blocks) == ["paragraph"] * 3
    assert extracted.blocks[1].text == "Page 2 covers topic 2. It has a second sentence."


def test_pdf_with_a_password_is_refused() -> None:
    # given
    data = encrypt_pdf(make_pdf(["Secret plans."]), user_password="letmein")

    # when
    code = error_code(data, PDF)

    # then
    assert code == "encrypted"


def test_pdf_encrypted_with_an_empty_password_is_read() -> None:
    # given: only an owner password (permissions), so any reader can open it
    data = encrypt_pdf(make_pdf(["Open to all readers."]), user_password="")

    # when
    extracted = extract(data, content_type=PDF, name="open.pdf")

    # then
    assert [block.text for block in extracted.blocks] == ["Open to all readers."]


def test_scanned_pdf_without_text_says_ocr_is_not_supported() -> None:
    # given: a page with only a drawing, as a scan has only an image
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 60, style="F")
    data = bytes(pdf.output())

    # when
    with pytest.raises(ExtractionError) as caught:
        extract(data, content_type=PDF, name="scan.pdf")

    # then
    assert caught.value.code == "no_text"
    assert "OCR" in caught.value.message


def test_truncated_pdf_is_corrupt() -> None:
    # given
    data = make_pdf(["Some text that will be cut off."])

    # when
    code = error_code(data[: len(data) // 2], PDF)

    # then
    assert code == "corrupt"


def test_docx_headings_paragraphs_lists_and_tables_in_body_order() -> None:
    # when
    extracted = extract(make_docx(), content_type=DOCX, name="guide.docx")

    # then
    assert extracted.pages is None
    assert [(block.kind, block.text, block.level) for block in extracted.blocks] == [
        ("heading", "User guide", 1),
        ("heading", "Installation", 1),
        ("paragraph", "Download the installer and run it.", 0),
        ("list", "- Linux\n- macOS", 0),
        ("heading", "Requirements", 2),
        ("table", "| Part | Minimum |\n| --- | --- |\n| RAM | 8 GB |\n| Disk | 20 GB |", 0),
        ("paragraph", "Any recent CPU works.", 0),
    ]


def test_pptx_one_page_per_slide() -> None:
    # when
    extracted = extract(make_pptx(), content_type=PPTX, name="results.pptx")

    # then
    assert extracted.pages == 2
    assert [(block.kind, block.text, block.page) for block in extracted.blocks] == [
        ("heading", "Quarterly results", 1),
        ("paragraph", "Revenue grew by 12 percent.", 1),
        ("heading", "Regions", 2),
        ("table", "| Region | Sales |\n| --- | --- |\n| Europe | 40 |", 2),
        ("paragraph", "Mention the new office.", 2),
    ]


def test_xlsx_one_page_per_sheet_with_the_header_repeated_every_40_rows() -> None:
    # when
    extracted = extract(make_xlsx(), content_type=XLSX, name="data.xlsx")

    # then: the empty third sheet counts as a page but adds no blocks
    assert extracted.pages == 3
    assert [(block.kind, block.page) for block in extracted.blocks] == [
        ("heading", 1),
        ("table", 1),
        ("table", 1),
        ("heading", 2),
        ("table", 2),
    ]
    people_first, people_rest = extracted.blocks[1].text.split("\n"), extracted.blocks[2].text.split("\n")
    assert people_first[:3] == ["| Name | Age |", "| --- | --- |", "| Person 0 | 20 |"]
    assert len(people_first) == 2 + 40
    assert people_rest[:3] == ["| Name | Age |", "| --- | --- |", "| Person 40 | 60 |"]
    assert len(people_rest) == 2 + 5
    assert extracted.blocks[3].text == "Prices"
    assert extracted.blocks[4].text == "| Item | Price |\n| --- | --- |\n| Tea | 2.5 |"


def test_csv_delimiter_is_sniffed_and_rows_become_tables() -> None:
    # given
    data = b"city;population\nParis;2100000\nLyon;520000\n"

    # when
    extracted = extract(data, content_type="text/csv", name="cities.csv")

    # then
    assert [(block.kind, block.text) for block in extracted.blocks] == [
        ("table", "| city | population |\n| --- | --- |\n| Paris | 2100000 |\n| Lyon | 520000 |")
    ]


def test_html_drops_page_chrome_and_keeps_structure() -> None:
    # given
    data = b"""<!doctype html><html><head><title>Ignored</title><style>p{color:red}</style></head><body>
      <nav><a href="/">Home</a></nav>
      <h1>Release notes</h1>
      <div>Loose text in a div.</div>
      <h2>Fixes</h2>
      <p>Fixed a <b>crash</b> on start.<br>Faster search.</p>
      <ul><li>First<ul><li>Nested</li></ul></li><li>Second</li></ul>
      <pre>make install
make test</pre>
      <table><tr><th>Version</th><th>Date</th></tr><tr><td>2.0</td><td>May</td></tr></table>
      <script>alert("no")</script>
      <footer>Copyright</footer>
    </body></html>"""

    # when
    extracted = extract(data, content_type="text/html; charset=utf-8", name="notes.html")

    # then
    assert [(block.kind, block.text, block.level) for block in extracted.blocks] == [
        ("heading", "Release notes", 1),
        ("paragraph", "Loose text in a div.", 0),
        ("heading", "Fixes", 2),
        ("paragraph", "Fixed a crash on start. Faster search.", 0),
        ("list", "- First\n  - Nested\n- Second", 0),
        ("code", "make install\nmake test", 0),
        ("table", "| Version | Date |\n| --- | --- |\n| 2.0 | May |", 0),
    ]


def test_markdown_headings_code_tables_lists_and_paragraphs() -> None:
    # given
    text = "\n".join(
        [
            "# Guide",
            "",
            "Intro paragraph",
            "on two lines.",
            "",
            "## Setup ##",
            "",
            "```bash",
            "# not a heading",
            "",
            "pip install nexent",
            "```",
            "",
            "| Option | Default |",
            "| :--- | ---: |",
            "| size | 350 |",
            "",
            "- one",
            "- two",
            "",
            "Underlined",
            "----------",
            "Last words.",
        ]
    )

    # when
    extracted = extract(text.encode(), content_type="text/markdown", name="guide.md")

    # then
    assert [(block.kind, block.text, block.level) for block in extracted.blocks] == [
        ("heading", "Guide", 1),
        ("paragraph", "Intro paragraph\non two lines.", 0),
        ("heading", "Setup", 2),
        ("code", "# not a heading\n\npip install nexent", 0),
        ("table", "| Option | Default |\n| --- | --- |\n| size | 350 |", 0),
        ("list", "- one\n- two", 0),
        ("heading", "Underlined", 2),
        ("paragraph", "Last words.", 0),
    ]


def test_plain_text_named_md_is_read_as_markdown() -> None:
    # when: byte sniffers call Markdown text/plain
    extracted = extract(b"# Title\n\nBody.", content_type="text/plain", name="README.md")

    # then
    assert kinds(extracted.blocks) == ["heading", "paragraph"]


def test_plain_text_paragraphs_split_on_blank_lines() -> None:
    # given
    data = b"First paragraph\nstill first.\r\n\r\n  \nSecond paragraph."

    # when
    extracted = extract(data, content_type="text/plain", name="notes.txt")

    # then
    assert [block.text for block in extracted.blocks] == ["First paragraph\nstill first.", "Second paragraph."]
    assert extracted.pages is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("Grüße aus Köln".encode(), "Grüße aus Köln"),
        ("\ufeffGrüße aus Köln".encode(), "Grüße aus Köln"),
        ("Grüße aus Köln".encode("utf-16"), "Grüße aus Köln"),
        ("Grüße aus Köln".encode("latin-1"), "Grüße aus Köln"),
        (b"caf\xe9 \x00\xff\xfe", "café \xff\xfe"),
    ],
)
def test_text_decoding_never_fails(data: bytes, expected: str) -> None:
    # when
    extracted = extract(data, content_type="text/plain", name="x.txt")

    # then
    assert extracted.blocks[0].text == expected


def test_json_object_gives_one_block_per_key_and_array_one_per_element() -> None:
    # given
    obj = json.dumps({"name": "Nexent", "tags": ["ai", "agents"]}).encode()
    array = json.dumps([{"q": "Hi?"}, {"q": "你好?"}]).encode()

    # when
    from_object = extract(obj, content_type="application/json", name="a.json")
    from_array = extract(array, content_type="application/json", name="b.json")

    # then
    assert [block.text for block in from_object.blocks] == ['"name": "Nexent"', '"tags": [\n  "ai",\n  "agents"\n]']
    assert [block.text for block in from_array.blocks] == ['{\n  "q": "Hi?"\n}', '{\n  "q": "你好?"\n}']
    assert kinds(from_object.blocks) == ["code", "code"]


def test_invalid_json_is_corrupt() -> None:
    assert error_code(b'{"open": ', "application/json") == "corrupt"


def test_zip_bomb_docx_is_refused(settings: Settings) -> None:
    # given: a valid document carrying 5 MB of zeros, with a 1 MB limit
    settings.KNOWLEDGE_MAX_UNZIPPED_BYTES = 1024 * 1024
    data = add_zip_member(make_docx(), "word/media/zeros.bin", 5 * 1024 * 1024)

    # when
    code = error_code(data, DOCX, "bomb.docx")

    # then
    assert code == "zip_bomb"


def test_highly_compressed_member_is_refused_under_the_size_limit() -> None:
    # given: 5 MB of zeros deflate about 1000:1, far past the 200:1 allowed
    data = add_zip_member(make_docx(), "word/media/zeros.bin", 5 * 1024 * 1024)

    # when
    code = error_code(data, DOCX, "bomb.docx")

    # then
    assert code == "zip_bomb"


def test_ole2_file_given_as_office_type_is_encrypted() -> None:
    # given: what Office writes for a password-protected .docx (the OLE2 container)
    data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(2048)

    # when
    codes = {error_code(data, content_type) for content_type in (DOCX, PPTX, XLSX)}

    # then
    assert codes == {"encrypted"}


def test_office_type_that_is_not_a_zip_is_corrupt() -> None:
    assert error_code(b"PK\x03\x04 this is no zip", XLSX) == "corrupt"


def test_empty_file() -> None:
    assert error_code(b"", PDF) == "empty"


def test_unsupported_type() -> None:
    assert error_code(b"\x89PNG\r\n\x1a\n", "image/png", "photo.png") == "unsupported_type"


def test_whitespace_only_text_has_no_text() -> None:
    assert error_code(b" \n\t\n ", "text/plain") == "no_text"


def test_text_over_the_limit_is_refused(settings: Settings) -> None:
    # given
    settings.KNOWLEDGE_MAX_TEXT_CHARS = 1000
    data = ("A sentence of text.\n\n" * 100).encode()

    # when
    code = error_code(data, "text/plain")

    # then
    assert code == "too_much_text"


def test_chinese_text_is_detected_as_chinese() -> None:
    # when
    extracted = extract(
        "第一章 安装\n\n下载安装程序并运行 Nexent 客户端。".encode(), content_type="text/plain", name="x"
    )

    # then
    assert extracted.language == "zh"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("知识库检索系统使用向量搜索和关键词搜索。", "zh"),
        ("我们用 Python 和 Django 开发多租户平台。", "zh"),
        ("The knowledge base mixes keyword and vector search.", "en"),
        ("Beijing 北京 is the capital of China.", "en"),
        ("1234 5678 -- !!", ""),
        ("", ""),
        ("これは日本語のテキストです。", ""),
    ],
)
def test_detect_language(text: str, expected: str) -> None:
    assert detect_language(text) == expected
