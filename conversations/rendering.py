"""Markdown for chat messages, rendered on the server and sanitised: no script, no event handlers, no
raw HTML; links open with rel="noopener noreferrer"."""

import nh3
from markdown_it import MarkdownIt

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(
    ["table", "strikethrough"]
)
ALLOWED_TAGS = {
    "p",
    "br",
    "strong",
    "em",
    "del",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "a",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "sup",
}


ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}


def render_markdown(text: str) -> str:
    html = _markdown.render(text or "")
    return nh3.clean(
        html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes=URL_SCHEMES, link_rel="noopener noreferrer"
    )


def browser_policy() -> dict:
    """The same rules for the chat page's live rendering of an answer being written (live_markdown.js)."""
    return {
        "tags": sorted(ALLOWED_TAGS),
        "attributes": sorted(set().union(*ALLOWED_ATTRIBUTES.values())),
        "schemes": sorted(URL_SCHEMES),
    }
