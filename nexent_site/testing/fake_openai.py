"""A local OpenAI-compatible HTTP server that stands in for *external* model providers in tests and
benchmarks. It speaks the real protocol over real HTTP: chat completions (JSON and SSE streaming, tool
calls, usage), embeddings, rerank and model listing, with scripted replies and failures.

    server = FakeOpenAI(); server.start()
    server.script(Reply(content="Hello"), Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "2+2"})]))
    ... OpenAI(base_url=server.base_url, api_key="x") ...
    server.stop()

Without a script, chat answers "echo: <last user text>" (as a `final_answer` tool call when tools are
offered), so any agent run completes.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ToolCallSpec:
    name: str
    arguments: dict[str, Any]


@dataclass
class Reply:
    """One scripted answer to a chat completion request."""

    content: str = ""
    tool_calls: list[ToolCallSpec] = field(default_factory=list)
    status: int = 200  # non-200: an error response in OpenAI's format
    error_message: str = "scripted failure"
    delay_s: float = 0.0  # before the first byte
    token_gap_s: float | None = None  # between streamed chunks (default: the server's)
    malformed: bool = False  # a 200 whose body is not valid JSON / SSE
    fail_after_chunks: int | None = None  # streaming: drop the connection after this many chunks
    error_after_chunks: int | None = None  # streaming: an error event (`data: {"error": …}`) after this many
    title: bool = False  # for a conversation-title request (see FakeOpenAI.title_prompt), not for a turn
    usage: bool = True  # False: no token usage in the answer, as llama.cpp's server streams it


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [part + (" " if i < len(parts) - 1 else "") for i, part in enumerate(parts)]


def fake_embedding(text: str, dimension: int) -> list[float]:
    """Deterministic unit vector from the text's words, so similar texts get similar vectors."""
    vector = [0.0] * dimension
    for word in text.lower().split():
        digest = hashlib.sha256(word.strip(".,!?;:").encode()).digest()
        for i in range(0, 8, 2):
            vector[int.from_bytes(digest[i : i + 2], "big") % dimension] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes; with Nagle's algorithm on, the body waits for the
    # client's delayed ACK (~40 ms on Linux), which no real provider adds.
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:
        pass

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "code": None, "param": None}})

    def _authorized(self) -> bool:
        fake = self.server.fake
        if fake.api_key is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {fake.api_key}":
            return True
        self._error(401, "Incorrect API key provided.", "invalid_api_key")
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._error(400, "invalid JSON body")
            return
        fake = self.server.fake
        if fake.record_requests:
            fake.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        if not self._authorized():
            return
        if self.path.endswith("/chat/completions"):
            self._chat(body)
        elif self.path.endswith("/embeddings"):
            self._embeddings(body)
        elif self.path.endswith("/rerank"):
            self._rerank(body)
        else:
            self._error(404, f"no route {self.path}")

    # --- chat ----------------------------------------------------------------------------------------
    def _chat(self, body: dict) -> None:
        fake = self.server.fake
        reply = fake.next_reply(body)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.status != 200:
            self._error(reply.status, reply.error_message, "server_error" if reply.status >= 500 else "invalid_request")
            return
        if reply.malformed:
            data = b'{"id": "broken", "choices": [ {"message": '
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream" if body.get("stream") else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        cut = bool(limit and len(reply.content.split()) > limit)  # a word a token, as the usage below counts
        if cut:  # the answer stops at the limit, and says so, as a real server's does
            reply = replace(reply, content=" ".join(reply.content.split()[:limit]))
        finish = "length" if cut else "stop"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = max(1, len(reply.content.split())) + sum(
            len(json.dumps(t.arguments)) // 4 for t in reply.tool_calls
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        tool_calls = [
            {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": t.name, "arguments": json.dumps(t.arguments)},
            }
            for t in reply.tool_calls
        ]
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            self._send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else finish}
                    ],
                    **({"usage": usage} if reply.usage else {}),
                },
            )
            return
        gap = fake.token_gap_s if reply.token_gap_s is None else reply.token_gap_s
        # Chunked, on a connection kept for the client's next request, as real providers stream (OpenAI, vLLM,
        # llama.cpp's server): a client that pools connections opens one per concurrent stream, not one per
        # request.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        chunks: list[dict] = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": word}) for word in _words(reply.content) if reply.content]
        for index, call in enumerate(tool_calls):
            chunks.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            chunks.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]})
            )
        chunks.append(chunk({}, "tool_calls" if tool_calls else finish))
        if reply.usage and (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [],
                    "usage": usage,
                }
            )
        try:
            for number, item in enumerate(chunks):
                if reply.fail_after_chunks is not None and number >= reply.fail_after_chunks:
                    self.close_connection = True  # the connection closes mid-stream, the body unfinished
                    return
                if reply.error_after_chunks is not None and number >= reply.error_after_chunks:
                    error = {"error": {"message": reply.error_message, "type": "server_error", "code": None}}
                    self._write_chunk(f"data: {json.dumps(error)}\n\n".encode())
                    self._write_chunk(b"")
                    return
                self._write_chunk(f"data: {json.dumps(item)}\n\n".encode())
                is_text = bool(item.get("choices")) and "content" in item["choices"][0]["delta"]
                if gap and is_text:
                    time.sleep(gap)
            self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            with fake._lock:
                fake.dropped_streams += 1
            return

    def _write_chunk(self, data: bytes) -> None:
        """One chunk of a chunked body (an empty one ends the body)."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # --- embeddings and rerank --------------------------------------------------------------------------
    def _embeddings(self, body: dict) -> None:
        fake = self.server.fake
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        if fake.embedding_delay_s:
            time.sleep(fake.embedding_delay_s)
        if fake.embedding_status != 200:
            self._error(fake.embedding_status, "scripted embedding failure", "server_error")
            return
        with fake._lock:
            fake.embedding_requests.append(texts)
            failing = fake.embedding_failures > 0
            if failing:
                fake.embedding_failures -= 1
        if failing:
            self._error(503, "scripted transient embedding failure", "server_error")
            return
        data = [
            {"object": "embedding", "index": i, "embedding": fake_embedding(t, fake.dimension)}
            for i, t in enumerate(texts)
        ]
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": sum(len(t.split()) for t in texts), "total_tokens": 0},
            },
        )

    def _rerank(self, body: dict) -> None:
        query = set(str(body.get("query", "")).lower().split())
        results = []
        for index, document in enumerate(body.get("documents") or []):
            words = set(str(document).lower().split())
            results.append({"index": index, "relevance_score": len(query & words) / (len(query) or 1)})
        results.sort(key=lambda r: -r["relevance_score"])
        self._send_json(200, {"results": results})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # socketserver's 5 refuses a burst of connections no real provider would
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops its connection (a stopped answer) is no error of the server's: no traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FakeOpenAI:
    def __init__(
        self,
        *,
        api_key: str | None = None,
        dimension: int = 384,
        token_gap_s: float = 0.0,
        record_requests: bool = True,
    ) -> None:
        self.api_key = api_key
        self.record_requests = record_requests  # into `requests`, for tests to read; not in long runs
        self.dimension = self._initial_dimension = dimension
        self.token_gap_s = token_gap_s
        self.embedding_status = 200
        self.embedding_delay_s = 0.0
        self.embedding_failures = 0  # the next N embedding requests answer 503
        self.embedding_requests: list[list[str]] = []
        self.requests: list[dict] = []
        self.dropped_streams = 0  # streamed answers the client closed before their end
        self._replies: deque[Reply] = deque()
        # Title requests come from a background task after a turn, at a time no test controls (one of the
        # previous test may arrive during the next): they get only replies scripted with `title=True`.
        self.title_prompt: str | None = None
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self._replies.clear()
            self.requests.clear()
            self.dropped_streams = 0
        self.api_key = None
        self.embedding_status = 200
        self.embedding_delay_s = 0.0
        self.embedding_failures = 0
        self.embedding_requests = []
        self.dimension = self._initial_dimension
        self.token_gap_s = 0.0

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def chat_requests(self) -> list[dict]:
        return [r["body"] for r in self.requests if r["path"].endswith("/chat/completions")]

    def answer_requests(self) -> list[dict]:
        """The chat requests but the conversations' title requests (made by a background task, in any order)."""
        return [body for body in self.chat_requests() if not self._is_title_request(body)]

    def _is_title_request(self, body: dict) -> bool:
        messages = body.get("messages") or [{}]
        return (
            bool(self.title_prompt)
            and messages[0].get("role") == "system"
            and (messages[0].get("content") == self.title_prompt)
        )

    def next_reply(self, body: dict) -> Reply:
        title = self._is_title_request(body)
        with self._lock:
            for reply in self._replies:
                if reply.title == title:
                    self._replies.remove(reply)
                    return reply
        last_user = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {"content": ""})
        content = last_user.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        text = f"echo: {str(content).strip()[-200:]}"
        if body.get("tools"):
            return Reply(tool_calls=[ToolCallSpec("final_answer", {"answer": text})])
        return Reply(content=text)


def main() -> None:
    """`python -m nexent_site.testing.fake_openai --port 8199 [--token-gap 0.05] [--reply TEXT --first-token 0.2]`:
    run it by hand, or as a process of its own (the benchmarks: a provider does not share the clients' CPU
    time and GIL). With `--reply`, every chat request gets TEXT, its first byte after `--first-token` s."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8199)
    parser.add_argument("--token-gap", type=float, default=0.0)
    parser.add_argument("--reply", default=None, help="answer every chat request with this text")
    parser.add_argument("--first-token", type=float, default=0.0, help="with --reply: seconds before its first byte")
    args = parser.parse_args()
    fake = FakeOpenAI(token_gap_s=args.token_gap, record_requests=False)
    if args.reply is not None:
        reply = Reply(content=args.reply, delay_s=args.first_token)
        fake.next_reply = lambda body: reply
    server = _Server(("127.0.0.1", args.port), _Handler)
    server.fake = fake
    print(f"fake OpenAI-compatible server on http://127.0.0.1:{args.port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
