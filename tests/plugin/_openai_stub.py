"""A stand-in for the OpenAI Responses API on a loopback port, so that a test can record what a real
`Agent("openai:gpt-4o")` sends without a network or a key."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = "Hello from the stand-in!"

_RESPONSE: dict[str, Any] = {
    "id": "resp_stand_in",
    "object": "response",
    "created_at": 0,
    "status": "completed",
    "model": "gpt-4o-2024-08-06",
    "output": [
        {
            "type": "message",
            "id": "msg_stand_in",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": ANSWER, "annotations": []}],
        }
    ],
    "usage": {
        "input_tokens": 5,
        "output_tokens": 4,
        "total_tokens": 9,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    },
}


class _Handler(BaseHTTPRequestHandler):
    requests: list[str]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.requests.append(f"{self.path} {body.decode()}")  # type: ignore[attr-defined]
        data = json.dumps(_RESPONSE).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def openai_stand_in() -> Iterator[tuple[str, list[str]]]:
    """`(base_url, requests)`: point `OPENAI_BASE_URL` at `base_url`; `requests` lists what it received."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", server.requests  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
