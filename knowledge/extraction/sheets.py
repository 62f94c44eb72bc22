"""Spreadsheets (XLSX) and CSV: rows become pipe tables of at most 40 rows, each repeating the header row."""

from __future__ import annotations

import contextlib
import csv
import datetime
import io

import openpyxl

from knowledge.extraction.blocks import BlockCollector
from knowledge.extraction.safety import check_office_package
from knowledge.extraction.tables import add_row_tables
from knowledge.extraction.text import decode_text

_SNIFF_CHARS = 20_000


def read_xlsx(data: bytes, sink: BlockCollector) -> int:
    """One page per worksheet, headed by the sheet's name; chart sheets, charts and images are ignored.

    Formulas give the values cached in the file; a workbook written by a program that does not cache
    them shows those cells empty.
    """
    check_office_package(data, label="Excel workbook")
    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        for page, sheet in enumerate(workbook.worksheets, start=1):
            # Some writers store a wrong sheet dimension; read_only mode would trust it and stop early.
            sheet.reset_dimensions()
            rows = ([_cell_text(value) for value in values] for values in sheet.iter_rows(values_only=True))
            add_row_tables(rows, sink, page=page, heading=sheet.title.strip() or f"Sheet {page}")
        return len(workbook.worksheets)
    finally:
        workbook.close()


def read_csv(data: bytes, sink: BlockCollector) -> None:
    """The delimiter (comma, semicolon, tab or pipe) is sniffed from the start of the file."""
    text = decode_text(data)
    # One column, or too irregular to tell: read it as plain comma-separated values.
    dialect: type[csv.Dialect] = csv.excel
    with contextlib.suppress(csv.Error):
        dialect = csv.Sniffer().sniff(text[:_SNIFF_CHARS], delimiters=",;\t|")
    add_row_tables(csv.reader(io.StringIO(text, newline=""), dialect), sink)


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return value.date().isoformat() if value.time() == datetime.time() else value.isoformat(sep=" ")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)
