"""Turns a published agent version into a smolagents agent and runs it, emitting the typed event
protocol documented in docs/events.md (the same events reach websockets, SSE and the OpenAI API)."""
