"""An incremental server-sent-events decoder that also reads the seed's non-standard streams.

Standard SSE (https://html.spec.whatwg.org/multipage/server-sent-events.html): fields ``data``,
``event``, ``id``, ``retry``; ``:`` comments; LF, CRLF or CR line ends; an event ends at a blank
line; bytes may be split anywhere across network reads. On top of that, the seed prints one JSON
object spread over several lines after a single ``data:``: lines that are no SSE field are taken
as continuations of the current data, and a new ``data:`` line closes the previous event when
what came before is already complete JSON (so progress arrives as it is sent, not at the end).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator

from .errors import MalformedAnswerError

__all__ = ["SSEEvent", "SSEDecoder", "parse_event_data", "DONE", "MAX_EVENT_BYTES"]

#: One event larger than this is refused (a whole 1536x1024 PNG in base64 is ~4 MB).
MAX_EVENT_BYTES = 64 * 1024 * 1024

DONE = object()  # sentinel yielded by parse_event_data for "[DONE]"

_FIELDS = (b"data", b"event", b"id", b"retry")
_EARLY_DISPATCH_BYTES = 1024 * 1024


@dataclass
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None
    #: The JSON values in ``data`` when the decoder already parsed them (see _complete_json).
    values: list | None = None

    def parsed(self) -> list[object]:
        return self.values if self.values is not None else parse_event_data(self.data)


class SSEDecoder:
    """Feed bytes with :meth:`feed`, get complete events; call :meth:`close` at end of stream."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._scan = 0  # bytes of _buf already searched for a line end
        self._data: list[bytes] = []
        self._data_size = 0
        self._event = b""
        self._id: bytes | None = None
        self._retry: int | None = None
        self._pending_cr = False
        self._max = max_event_bytes
        self.last_event_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if not chunk:
            return events
        buf = self._buf
        if self._pending_cr:
            # A CR ended the previous read: a leading LF belongs to it (CRLF split in two).
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf += chunk
        start = 0
        pos = self._scan
        size = len(buf)
        while pos < size:
            nl = buf.find(b"\n", pos)
            cr = buf.find(b"\r", pos, nl if nl >= 0 else size)
            if cr >= 0:
                end, nxt = cr, cr + 1
                if nxt < size and buf[nxt] == 0x0A:
                    nxt += 1
                elif nxt == size:
                    self._pending_cr = True
            elif nl >= 0:
                end, nxt = nl, nl + 1
            else:
                break
            self._line(bytes(buf[start:end]), events)
            start = pos = nxt
        del buf[:start]
        self._scan = len(buf)
        if len(buf) + self._data_size > self._max:
            raise MalformedAnswerError(
                f"A streamed event is larger than {self._max // 2**20} MiB; the stream was "
                "stopped. Try again without streaming."
            )
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: a last line or event not followed by a blank line is still read."""
        events: list[SSEEvent] = []
        if self._buf:
            self._line(bytes(self._buf), events)
            self._buf.clear()
            self._scan = 0
        self._dispatch(events)
        return events

    # -- internals -------------------------------------------------------------------------

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line[:1] == b":":
            return  # comment / keep-alive
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name not in _FIELDS:
            if self._data:
                # The seed's multi-line JSON: a continuation of the current data. When it closes
                # the object, hand the event over now: the seed sends no blank line after it.
                self._append(line)
                if line.rstrip().endswith((b"}", b"]")) and self._data_size < _EARLY_DISPATCH_BYTES:
                    self._dispatch_if_complete(events)
            return
        if name == b"data":
            if self._data:
                self._dispatch_if_complete(events)
            self._append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\x00" not in value:
                self._id = value
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)

    def _append(self, value: bytes) -> None:
        self._data.append(value)
        self._data_size += len(value) + 1
        if self._data_size > self._max:
            raise MalformedAnswerError(
                f"A streamed event is larger than {self._max // 2**20} MiB; the stream was "
                "stopped. Try again without streaming."
            )

    def _dispatch_if_complete(self, events: list[SSEEvent]) -> None:
        """Dispatch now if the data so far is already whole JSON (parsed once, kept)."""
        data = b"\n".join(self._data).decode("utf-8", "replace")
        values = _complete_json(data)
        if values is not None:
            self._dispatch(events, data, values)

    def _dispatch(self, events: list[SSEEvent], data: str | None = None, values: list | None = None) -> None:
        if self._id is not None:
            self.last_event_id = self._id.decode("utf-8", "replace")
        if self._data:
            if data is None:
                data = b"\n".join(self._data).decode("utf-8", "replace")
            events.append(SSEEvent(
                data=data,
                event=self._event.decode("utf-8", "replace") or "message",
                id=self.last_event_id,
                retry=self._retry,
                values=values,
            ))
        self._data = []
        self._data_size = 0
        self._event = b""
        self._retry = None


def _complete_json(data: str) -> list[object] | None:
    """The JSON values if the data collected so far is already whole, else None."""
    text = data.strip()
    if not text:
        return None
    if text == "[DONE]":
        return [DONE]
    if text[:1] not in ("{", "["):
        return None
    try:
        return list(_iter_json(text))
    except ValueError:
        return None


def _iter_json(text: str) -> Iterator[object]:
    decoder = json.JSONDecoder()
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        if pos >= end:
            return
        if text.startswith("[DONE]", pos):
            yield DONE
            pos += 6
            continue
        value, pos = decoder.raw_decode(text, pos)
        yield value


def parse_event_data(data: str) -> list[object]:
    """The JSON values (or :data:`DONE`) in one event's data; several may be concatenated."""
    try:
        return list(_iter_json(data))
    except ValueError:
        raise MalformedAnswerError(
            "The stream sent an event that is not valid JSON; the answer could not be read. "
            "Try again, or turn streaming off for this gateway."
        ) from None
