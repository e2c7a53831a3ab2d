"""The SSE framing strata does itself, and the sse-starlette method it relies on."""

from __future__ import annotations

from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse

from strata.serve.app import EventStream, dumps, sse


def test_an_event_is_framed_as_sse_starlette_frames_it():
    chunk = dumps({"choices": [{"text": "é\nline"}]})  # JSON escapes the line break: one data line
    assert sse(chunk) == ServerSentEvent(data=chunk).encode()
    assert sse("[DONE]") == b"data: [DONE]\r\n\r\n"


def test_event_stream_overrides_a_method_sse_starlette_still_has():
    # a rename upstream would silently bring back its per-event cancel scope
    assert "_send_with_timeout" in vars(EventSourceResponse)
    assert EventStream._send_with_timeout is not EventSourceResponse._send_with_timeout
