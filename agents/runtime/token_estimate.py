"""Token counts for model calls whose provider reports none.

llama.cpp's server (the bundled model's) streams answers without a usage chunk, and no provider reports usage
for an answer stopped midway. Counted as zero, such runs would be free: nothing in the usage records, and the
organisation's and API keys' monthly token budgets never reached. They are estimated instead, and the run says
so (`AgentRun.usage_estimated`).

The estimate needs no tokenizer: about four characters of Latin-script text make a token, while CJK and other
non-ASCII characters are about one token each (BPE vocabularies rarely merge them). A streamed answer is at
least as many tokens as it came in chunks: OpenAI-compatible servers send one chunk per token or more.
"""

from __future__ import annotations

import math
from typing import Any

MESSAGE_OVERHEAD_TOKENS = 4  # the role and separators the chat template adds around each message


def tokens_estimate(text: str) -> int:
    if not text:
        return 0
    ascii_chars = sum(1 for char in text if char < "\x80")
    return math.ceil(ascii_chars / 4) + (len(text) - ascii_chars)


def messages_tokens_estimate(messages: list[Any]) -> int:
    """The prompt's tokens: each message's text (plain, or OpenAI's list of text parts) and its overhead."""
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        total += tokens_estimate(str(content or "")) + MESSAGE_OVERHEAD_TOKENS
    return total
