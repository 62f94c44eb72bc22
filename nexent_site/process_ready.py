"""What a long-running process (a web process, a Celery worker) does once it has loaded the platform, before it
serves anything: load what the first chat would otherwise load, then freeze the garbage collector's view of
everything loaded so far.

Why the freeze: the platform's processes hold about 265,000 objects after start-up (Django, DRF, smolagents,
openai, …) that live as long as the process. Python's full collection walks every one of them, holding the GIL:
measured with `gc.callbacks` in the chat benchmark (2026-12-01, 2 vCPUs at a CPU check of 16-26 µs), 150-180 ms
of CPU in a web or worker process, during which no chat in that process moves (a first token that much late).
`gc.freeze()` moves them to a generation the collector ignores (see the `gc` module's documentation), so a full
collection walks only what was made since: 8-20 ms of CPU in the same benchmark. What is frozen is never
collected: modules, classes, functions and settings, which a process keeps anyway.

Why the loading first: the URL configurations are imported on the first `reverse()` (the first finished
answer rendered by a websocket consumer, which runs on the event loop: a second or two during which that
process relays nothing), and templates are compiled on first use. Done here, it is done before the first
chat and frozen with the rest.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)

# Rendered outside a request, by the websocket consumers (and the pages): compiled before the first chat.
TEMPLATES_USED_BY_CONSUMERS = ("conversations/_message.html",)


def process_ready() -> int:
    """Load the URL configurations and the consumers' templates, then freeze every object the collector tracks.
    Idempotent. Returns how many objects are frozen."""
    from django.conf import settings
    from django.template.loader import get_template
    from django.urls import get_resolver

    for urlconf in {settings.ROOT_URLCONF, getattr(settings, "PUBLIC_SCHEMA_URLCONF", settings.ROOT_URLCONF)}:
        get_resolver(urlconf).reverse_dict  # noqa: B018  (imports the URLconf and builds its reverse lookup)
    for name in TEMPLATES_USED_BY_CONSUMERS:
        get_template(name)
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug("process ready: %d objects frozen", frozen)
    return frozen
