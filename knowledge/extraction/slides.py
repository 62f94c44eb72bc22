"""PowerPoint presentations (PPTX) with python-pptx: one page per slide."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pptx
from pptx.enum.shapes import MSO_SHAPE_TYPE, PP_PLACEHOLDER
from pptx.shapes.base import BaseShape
from pptx.shapes.shapetree import SlideShapes

from knowledge.extraction.blocks import BlockCollector
from knowledge.extraction.safety import check_office_package
from knowledge.extraction.tables import render_table

_CHROME = {PP_PLACEHOLDER.SLIDE_NUMBER, PP_PLACEHOLDER.DATE, PP_PLACEHOLDER.FOOTER}


def read_pptx(data: bytes, sink: BlockCollector) -> int:
    """Per slide: its title as a level-1 heading, then text frames and tables top to bottom, left to right,
    then the speaker notes; returns the slide count.

    Charts, images, SmartArt and the slide number, date and footer placeholders are not read.
    """
    check_office_package(data, label="PowerPoint presentation")
    presentation = pptx.Presentation(io.BytesIO(data))
    for page, slide in enumerate(presentation.slides, start=1):
        title = slide.shapes.title
        if title is not None:
            sink.add("heading", _frame_text(title), level=1, page=page)
        for shape in _reading_order(slide.shapes):
            if title is not None and shape.shape_id == title.shape_id:
                continue
            if shape.has_table:
                rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
                sink.add("table", render_table(rows), page=page)
            elif shape.has_text_frame:
                sink.add("paragraph", _frame_text(shape), page=page)
        notes = slide.notes_slide.notes_text_frame if slide.has_notes_slide else None
        if notes is not None:
            sink.add("paragraph", notes.text.replace("\v", "\n"), page=page)
    return len(presentation.slides)


def _reading_order(shapes: SlideShapes) -> Iterator[BaseShape]:
    """Shapes sorted by position, groups opened; the shape tree's own order is z-order, not reading order."""
    for shape in sorted(shapes, key=lambda shape: (shape.top or 0, shape.left or 0)):
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _reading_order(shape.shapes)
        elif not (shape.is_placeholder and shape.placeholder_format.type in _CHROME):
            yield shape


def _frame_text(shape: BaseShape) -> str:
    # A soft line break inside a paragraph comes out as a vertical tab.
    return shape.text_frame.text.replace("\v", "\n")
