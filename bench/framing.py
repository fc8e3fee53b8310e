"""
The smallest decoder of a reloc answer that the benchmark readers share: it
counts payload bytes (and feeds an optional digest) without building any
objects per frame, so that the reader costs as little as possible.
"""

from __future__ import annotations

from typing import Any

#: A frame header or ERR line longer than this is a fault.
MAX_HEADER = 1024


class FramingError(Exception):
    """
    The bytes received do not form a reloc answer.
    """


class FrameCounter:
    """
    Decode C{DATA <n>} frames incrementally from a reusable buffer.

    @ivar payload: payload bytes decoded so far.
    @ivar finished: whether C{EOF} or C{ERR} was seen.
    @ivar refusal: the text of an C{ERR} line, if one came.
    @ivar digest: a hashlib object fed with every payload byte, or L{None}.
    @ivar identity: the text of an C{ID} line (size and SHA-256), if one came.
    """

    def __init__(self, digest: Any = None) -> None:
        self.payload = 0
        self.finished = False
        self.refusal: str | None = None
        self.digest = digest
        self.identity: str | None = None
        self._remaining = 0
        self._header = b""

    def feed(self, buffer: bytearray, size: int) -> None:
        """
        Decode the first C{size} bytes of C{buffer}.

        @raise FramingError: on bytes that are not a well-formed answer.
        """
        position = 0
        while position < size:
            if self.finished:
                raise FramingError("bytes after the end mark")
            if self._remaining:
                take = min(self._remaining, size - position)
                if self.digest is not None:
                    self.digest.update(memoryview(buffer)[position : position + take])
                self._remaining -= take
                self.payload += take
                position += take
                continue
            end = buffer.find(b"\n", position, size)
            if end == -1:
                self._header += bytes(buffer[position:size])
                if len(self._header) > MAX_HEADER:
                    raise FramingError("header too long")
                return
            line = self._header + bytes(buffer[position:end])
            self._header = b""
            position = end + 1
            self._line(line.removesuffix(b"\r"))

    def _line(self, line: bytes) -> None:
        if line.startswith(b"DATA "):
            digits = line[5:]
            if not digits.isdigit():
                raise FramingError(f"bad header {line[:40]!r}")
            self._remaining = int(digits)
        elif line.startswith(b"ID "):
            # The identity line that opens an answer to GETID.
            self.identity = line[3:].decode("ascii", "replace")
        elif line == b"EOF":
            self.finished = True
        elif line.startswith(b"ERR "):
            self.finished = True
            self.refusal = line[4:].decode("utf-8", "replace")
        else:
            raise FramingError(f"bad header {line[:40]!r}")
