from django import template
from django.utils.safestring import SafeString, mark_safe

from conversations.rendering import browser_policy, render_markdown

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    return mark_safe(render_markdown(text))


@register.simple_tag
def markdown_policy() -> dict:
    """What live_markdown.js may keep of an answer's markdown: the server's own rules."""
    return browser_policy()
