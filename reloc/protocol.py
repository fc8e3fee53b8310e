"""
The reloc wire protocol, without any I/O.

A request is one line, C{GET <name> <offset>}.  An answer is a run of frames,
C{DATA <n>} followed by exactly C{n} payload bytes, closed by C{EOF}; a refusal
is one C{ERR <code> <reason>} line.  Lines end in LF and a CR right before the
LF is dropped.

One extension: C{GETID <name> <offset>} asks for the same answer, preceded
by one line C{ID <size> <sha256>} that names the file's version, so that a
reader can tell whether two servers hold the same file before it joins
their bytes.  A client that only knows C{GET} never sees that line.

Everything here takes bytes and returns values or events, so that the
protocols built on it can be tested with plain bytes and so that the proxy,
the file server and the client all agree on one reading of the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

#: The longest request line accepted, LF included.
MAX_REQUEST_LINE = 4096

#: The longest frame header or error line a decoder will buffer, LF included.
MAX_HEADER_LINE = 1024

#: The largest payload one C{DATA} frame may announce.  Far above any file
#: this project serves; it only keeps a hostile header from naming a number
#: with thousands of digits.
MAX_FRAME_PAYLOAD = 2**62

EOF_LINE = b"EOF\n"

BAD_REQUEST = 400
FORBIDDEN = 403
NOT_FOUND = 404
BAD_OFFSET = 416
UNAVAILABLE = 503

_ASCII_DIGITS = frozenset(b"0123456789")
_HEX_DIGITS = frozenset(b"0123456789abcdef")


class ProtocolError(Exception):
    """
    Bytes that break the protocol's rules.

    @ivar code: the C{ERR} code that answers the fault.
    @ivar reason: a short text that says what was wrong.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code} {self.reason}"


@dataclass(frozen=True)
class Request:
    """
    One parsed C{GET} request.

    @ivar name: the file's name relative to the served folder.
    @ivar offset: the first byte wanted.
    @ivar identify: whether the answer should start with the file's
        identity (the C{GETID} verb).
    """

    name: str
    offset: int
    identify: bool = False

    def toLine(self) -> bytes:
        """
        @return: this request as it goes on the wire.
        """
        verb = b"GETID" if self.identify else b"GET"
        return b"%s %s %d\n" % (verb, self.name.encode("utf-8"), self.offset)


@dataclass(frozen=True)
class Identity:
    """
    One version of a file: its size and the SHA-256 of its content.
    """

    size: int
    sha256: str

    def toLine(self) -> bytes:
        """
        @return: the C{ID} line that announces this identity.
        """
        return b"ID %d %s\n" % (self.size, self.sha256.encode("ascii"))

    def toJSON(self) -> dict[str, object]:
        return {"size": self.size, "sha256": self.sha256}

    @classmethod
    def fromJSON(cls, value: object) -> Identity:
        """
        @raise ValueError: if C{value} is not what L{toJSON} makes.
        """
        if not isinstance(value, dict):
            raise ValueError("identity is not an object")
        size, digest = value.get("size"), value.get("sha256")
        if not isinstance(size, int) or size < 0 or not isinstance(digest, str):
            raise ValueError("identity needs a size and a sha256")
        return parseIdentity(b"%d %s" % (size, digest.encode("ascii", "replace")))


def parseIdentity(rest: bytes) -> Identity:
    """
    Parse what follows C{ID } on an identity line.

    @raise ValueError: if it is not a size and 64 lower-case hex digits.
    """
    size, _, digest = rest.partition(b" ")
    if len(digest) != 64 or not _HEX_DIGITS.issuperset(digest):
        raise ValueError("bad sha256")
    return Identity(parseDigits(size), digest.decode("ascii"))


def parseDigits(field: bytes) -> int:
    """
    Read a non-negative integer written in plain ASCII digits.

    Python's C{int()} also takes signs, underscores, spaces and the digits of
    other scripts; the protocol takes none of them.

    @raise ValueError: if C{field} is empty or holds anything but C{0-9}.
    """
    if not field or not _ASCII_DIGITS.issuperset(field):
        raise ValueError(field)
    return int(field)


def validateName(name: str) -> None:
    """
    Check that C{name} is an acceptable relative file name.

    @raise ProtocolError: with code 400 for whitespace, control characters
        or an empty name, and 403 for absolute paths and C{.}/C{..} parts.
    """
    if not name:
        raise ProtocolError(BAD_REQUEST, "empty name")
    for char in name:
        if char.isspace() or ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0:
            raise ProtocolError(BAD_REQUEST, "name holds a space or control byte")
    if name.startswith("/"):
        raise ProtocolError(FORBIDDEN, "absolute names are refused")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ProtocolError(FORBIDDEN, "name has an empty, . or .. component")


def parseRequest(line: bytes) -> Request:
    """
    Parse one request line, without its LF (a trailing CR is dropped here).

    @raise ProtocolError: if the line is not a valid request.
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) >= MAX_REQUEST_LINE:
        raise ProtocolError(BAD_REQUEST, "request line too long")
    fields = line.split(b" ")
    if len(fields) != 3:
        raise ProtocolError(BAD_REQUEST, "expected: GET <name> <offset>")
    verb, rawName, rawOffset = fields
    if verb not in (b"GET", b"GETID"):
        raise ProtocolError(BAD_REQUEST, "unknown verb")
    try:
        offset = parseDigits(rawOffset)
    except ValueError:
        raise ProtocolError(BAD_REQUEST, "offset is not plain digits") from None
    try:
        name = rawName.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(BAD_REQUEST, "name is not UTF-8") from None
    validateName(name)
    return Request(name, offset, verb == b"GETID")


def encodeError(code: int, reason: str) -> bytes:
    """
    @return: an C{ERR} line; the reason is cut to one safe line.
    """
    text = " ".join(reason.split())[:200]
    return b"ERR %d %s\n" % (code, text.encode("utf-8", "replace"))


def dataHeader(length: int) -> bytes:
    """
    @return: the header line of a C{DATA} frame of C{length} bytes.
    """
    return b"DATA %d\n" % (length,)


class LineReceiver:
    """
    Collect bytes until the first LF, never holding more than C{limit} bytes.

    @ivar rest: bytes received after the line, once it is complete.
    """

    def __init__(self, limit: int = MAX_REQUEST_LINE) -> None:
        self._limit = limit
        self._buffer = b""
        self.rest = b""

    def feed(self, data: bytes) -> bytes | None:
        """
        Add bytes.

        @return: the line without its LF once it is complete, else L{None}.
        @raise ProtocolError: when the limit is passed with no LF seen.
        """
        end = data.find(b"\n")
        if end == -1:
            if len(self._buffer) + len(data) >= self._limit:
                self._buffer = b""
                raise ProtocolError(BAD_REQUEST, "request line too long")
            self._buffer += data
            return None
        line = self._buffer + data[:end]
        self._buffer = b""
        if len(line) >= self._limit:
            raise ProtocolError(BAD_REQUEST, "request line too long")
        self.rest = data[end + 1 :]
        return line


@dataclass(frozen=True)
class Payload:
    """
    Some payload bytes, in order; frame boundaries are not kept.
    """

    data: bytes


@dataclass(frozen=True)
class End:
    """
    The C{EOF} mark: the stream is complete.
    """


@dataclass(frozen=True)
class Identified:
    """
    The C{ID} line that opens the answer to C{GETID}.
    """

    identity: Identity


@dataclass(frozen=True)
class Refusal:
    """
    An C{ERR} line from the peer.
    """

    code: int
    reason: str


Event = Union[Payload, End, Refusal, Identified]


class FrameDecoder:
    """
    Turn a stream of frames into payload events, incrementally.

    Payload is handed out as soon as it arrives, in as few pieces as the input
    allows, so that a relay never has to wait for a whole frame.  After L{End}
    or L{Refusal} the decoder takes no more bytes.

    @ivar offset: payload bytes decoded so far.
    @ivar finished: whether an C{EOF} or C{ERR} line was seen.
    """

    def __init__(self, expectIdentity: bool = False) -> None:
        """
        @param expectIdentity: whether the answer must open with an C{ID}
            line (or be refused), as the answer to C{GETID} does.
        """
        self._header = b""
        self._remaining = 0
        self._awaitingIdentity = expectIdentity
        self.offset = 0
        self.finished = False

    @property
    def atBoundary(self) -> bool:
        """
        Whether the input so far ends exactly between two frames.
        """
        return self._remaining == 0 and not self._header

    def feed(self, data: bytes) -> list[Event]:
        """
        Decode more bytes.

        @return: the events they complete, in order.
        @raise ProtocolError: on bytes that break the framing; the decoder is
            unusable afterwards.
        """
        events: list[Event] = []
        position = 0
        size = len(data)
        while position < size:
            if self.finished:
                raise ProtocolError(BAD_REQUEST, "bytes after the end mark")
            if self._remaining:
                take = min(self._remaining, size - position)
                if position == 0 and take == size:
                    chunk = data
                else:
                    chunk = data[position : position + take]
                events.append(Payload(chunk))
                self._remaining -= take
                self.offset += take
                position += take
                continue
            end = data.find(b"\n", position)
            if end == -1:
                self._takeHeader(data[position:])
                break
            line = self._header + data[position:end]
            self._header = b""
            position = end + 1
            event = self._parseHeader(line)
            if event is not None:
                events.append(event)
        return events

    def _takeHeader(self, piece: bytes) -> None:
        if len(self._header) + len(piece) >= MAX_HEADER_LINE:
            raise ProtocolError(BAD_REQUEST, "frame header too long")
        self._header += piece

    def _parseHeader(self, line: bytes) -> Event | None:
        if len(line) >= MAX_HEADER_LINE:
            raise ProtocolError(BAD_REQUEST, "frame header too long")
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._awaitingIdentity and not line.startswith(b"ERR "):
            self._awaitingIdentity = False
            if not line.startswith(b"ID "):
                raise ProtocolError(BAD_REQUEST, "answer does not start with ID")
            try:
                return Identified(parseIdentity(line[3:]))
            except ValueError:
                raise ProtocolError(BAD_REQUEST, "bad ID line") from None
        if line.startswith(b"DATA "):
            try:
                length = parseDigits(line[5:])
            except ValueError:
                raise ProtocolError(BAD_REQUEST, "bad DATA length") from None
            if length > MAX_FRAME_PAYLOAD:
                raise ProtocolError(BAD_REQUEST, "DATA length too large")
            self._remaining = length
            return None
        if line == b"EOF":
            self.finished = True
            return End()
        if line.startswith(b"ERR "):
            self.finished = True
            return _parseRefusal(line[4:])
        raise ProtocolError(BAD_REQUEST, "unknown frame header")


def _parseRefusal(rest: bytes) -> Refusal:
    code, _, reason = rest.partition(b" ")
    try:
        number = parseDigits(code)
    except ValueError:
        raise ProtocolError(BAD_REQUEST, "bad ERR code") from None
    return Refusal(number, reason.decode("utf-8", "replace"))
