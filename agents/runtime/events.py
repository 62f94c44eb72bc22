"""The run event protocol: every event is a JSON object

    {"type": <EventType>, "run_id": "<uuid>", "seq": <1, 2, 3, …>, "ts": <unix seconds>, "agent": "<path>",
     "data": {...}}

`seq` increases by one per event within a run, so a client can resume after the last one it saw.
`agent` is empty for the run's own agent and "parent/child" for sub-agents' events.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    RUN_STARTED = "run_started"  # data: agent, version, mode
    STEP_STARTED = "step_started"  # data: step
    TEXT_DELTA = "text_delta"  # data: text
    TOOL_CALL = "tool_call"  # data: id, name, arguments
    TOOL_RESULT = "tool_result"  # data: id, name, output
    SUBAGENT_EVENT = "subagent_event"  # data: step, model_output, tool_calls, observations, error, final_answer
    FINAL_ANSWER = "final_answer"  # data: text, citations
    ERROR = "error"  # data: message, code, fatal
    USAGE = "usage"  # data: tokens_in, tokens_out, estimated
    RUN_FINISHED = "run_finished"  # data: status, error, duration_ms — always the last event


TERMINAL_EVENT = EventType.RUN_FINISHED
STORED_EVENT_TYPES = {t for t in EventType if t is not EventType.TEXT_DELTA}


def make_event(event_type: EventType, *, run_id: str, seq: int, data: dict[str, Any], agent: str = "") -> dict:
    return {
        "type": str(event_type),
        "run_id": run_id,
        "seq": seq,
        "ts": round(time.time(), 3),
        "agent": agent,
        "data": data,
    }
