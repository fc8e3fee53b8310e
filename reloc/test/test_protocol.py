"""
Tests for L{reloc.protocol}: request parsing, line collection and frame
decoding, all with plain bytes.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from reloc.protocol import (
    BAD_REQUEST,
    FORBIDDEN,
    MAX_FRAME_PAYLOAD,
    MAX_HEADER_LINE,
    MAX_REQUEST_LINE,
    End,
    Event,
    FrameDecoder,
    LineReceiver,
    Payload,
    ProtocolError,
    Refusal,
    Request,
    dataHeader,
    encodeError,
    parseRequest,
)

#: Modest, reproducible property runs: the suite stays fast and gives the
#: same verdict on every run.
propertySettings = settings(
    max_examples=200, deadline=None, derandomize=True, database=None
)


def encodeStream(chunks: list[bytes], crlf: bool = False) -> bytes:
    """
    @return: C{chunks} as C{DATA} frames followed by C{EOF}.
    """
    ending = b"\r\n" if crlf else b"\n"
    frames = [b"DATA %d%s%s" % (len(chunk), ending, chunk) for chunk in chunks]
    return b"".join(frames) + b"EOF" + ending


def collect(events: list[Event]) -> tuple[bytes, list[Event]]:
    """
    @return: the joined payload of C{events}, and the events that are not
        payload.
    """
    payload = b"".join(e.data for e in events if isinstance(e, Payload))
    others = [e for e in events if not isinstance(e, Payload)]
    return payload, others


def splitAt(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    @param cuts: positions in C{data}, in order.
    @return: C{data} cut at each of C{cuts}; the pieces join back to it.
    """
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def feedBytewise(decoder: FrameDecoder, data: bytes) -> list[Event]:
    """
    @return: the events from feeding C{data} to C{decoder} one byte at a time.
    """
    events: list[Event] = []
    for i in range(len(data)):
        events.extend(decoder.feed(data[i : i + 1]))
    return events


class ParseRequestTests(SynchronousTestCase):
    """
    Tests for L{parseRequest}.
    """

    def assertRefused(self, line: bytes, code: int) -> ProtocolError:
        """
        Assert that C{line} is refused with C{code}.
        """
        error = self.assertRaises(ProtocolError, parseRequest, line)
        self.assertEqual(error.code, code, f"{line!r}: {error}")
        return error

    def test_valid(self) -> None:
        """
        A well-formed line gives the name and the offset.
        """
        self.assertEqual(parseRequest(b"GET big.bin 1234"), Request("big.bin", 1234))

    def test_nestedName(self) -> None:
        """
        A relative path with several components is accepted.
        """
        self.assertEqual(parseRequest(b"GET a/b/c.txt 0"), Request("a/b/c.txt", 0))

    def test_utf8Name(self) -> None:
        """
        A name in non-ASCII UTF-8 text is decoded.
        """
        line = "GET ficheiro-ação.bin 7".encode()
        self.assertEqual(parseRequest(line), Request("ficheiro-ação.bin", 7))

    def test_crlf(self) -> None:
        """
        A CR right before the (already removed) LF is dropped.
        """
        self.assertEqual(parseRequest(b"GET big.bin 5\r"), Request("big.bin", 5))

    def test_doubleCr(self) -> None:
        """
        Only one trailing CR is dropped; a second leaves the offset malformed.
        """
        self.assertRefused(b"GET big.bin 5\r\r", BAD_REQUEST)

    def test_leadingZeros(self) -> None:
        """
        An offset with leading zeros is read as its decimal value.
        """
        self.assertEqual(parseRequest(b"GET a 007"), Request("a", 7))

    def test_wrongVerb(self) -> None:
        """
        A verb other than C{GET} is a bad request.
        """
        self.assertRefused(b"PUT big.bin 0", BAD_REQUEST)

    def test_lowerCaseVerb(self) -> None:
        """
        The verb is case-sensitive: C{get} is a bad request.
        """
        self.assertRefused(b"get big.bin 0", BAD_REQUEST)

    def test_tooFewFields(self) -> None:
        """
        A line with two fields is a bad request.
        """
        self.assertRefused(b"GET big.bin", BAD_REQUEST)

    def test_tooManyFields(self) -> None:
        """
        A line with four fields is a bad request.
        """
        self.assertRefused(b"GET big.bin 0 extra", BAD_REQUEST)

    def test_emptyLine(self) -> None:
        """
        An empty line is a bad request.
        """
        self.assertRefused(b"", BAD_REQUEST)

    def test_emptyName(self) -> None:
        """
        An empty name between the separators is a bad request.
        """
        self.assertRefused(b"GET  0", BAD_REQUEST)

    def test_offsetNotPlainDigits(self) -> None:
        """
        Offsets that C{int()} would take but that are not plain ASCII digits
        are bad requests.
        """
        for offset in [
            b"-1",
            b"+5",
            b"0x10",
            b"1_000",
            b"1.0",
            b"",
            b"abc",
            "\u0663".encode(),  # ARABIC-INDIC DIGIT THREE
            "\uff15".encode(),  # FULLWIDTH DIGIT FIVE
            "1\u0663".encode(),
        ]:
            self.assertRefused(b"GET a " + offset, BAD_REQUEST)

    def test_offsetLeadingSpace(self) -> None:
        """
        A space before the offset makes an extra field, a bad request.
        """
        self.assertRefused(b"GET a  5", BAD_REQUEST)

    def test_offsetTrailingSpace(self) -> None:
        """
        A space after the offset makes an extra field, a bad request.
        """
        self.assertRefused(b"GET a 5 ", BAD_REQUEST)

    def test_offsetManyDigits(self) -> None:
        """
        An offset far beyond 2**63 is still plain digits: it parses, and the
        file server answers it as beyond the end of the file.
        """
        self.assertEqual(parseRequest(b"GET a %d" % (2**70,)).offset, 2**70)
        self.assertEqual(parseRequest(b"GET a " + b"0" * 30 + b"5").offset, 5)
        self.assertRefused(b"GET a " + b"1" * 4100, BAD_REQUEST)

    def test_offsetTwentyDigits(self) -> None:
        """
        A 20-digit offset above 2**63 parses; the server judges it against
        the file's size.
        """
        self.assertEqual(parseRequest(b"GET a %d" % (2**64,)), Request("a", 2**64))

    def test_nulInName(self) -> None:
        """
        A NUL byte in the name is a bad request.
        """
        self.assertRefused(b"GET a\x00b 0", BAD_REQUEST)

    def test_invalidUtf8(self) -> None:
        """
        A name that is not UTF-8 is a bad request.
        """
        self.assertRefused(b"GET \xff\xfe 0", BAD_REQUEST)
        self.assertRefused(b"GET a\xc3 0", BAD_REQUEST)
        self.assertRefused(b"GET \xed\xa0\x80 0", BAD_REQUEST)

    def test_controlCharacters(self) -> None:
        """
        Whitespace and control characters in the name are bad requests.
        """
        for char in ["\t", "\r", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\xa0"]:
            name = f"a{char}b".encode()
            self.assertRefused(b"GET " + name + b" 0", BAD_REQUEST)

    def test_unicodeSpace(self) -> None:
        """
        Unicode whitespace such as the line separator is a bad request.
        """
        self.assertRefused("GET a\u2028b 0".encode(), BAD_REQUEST)

    def test_dotDot(self) -> None:
        """
        A C{..} component is forbidden wherever it stands.
        """
        for name in [b"..", b"../x", b"a/../b", b"a/.."]:
            self.assertRefused(b"GET " + name + b" 0", FORBIDDEN)

    def test_dot(self) -> None:
        """
        A C{.} component is forbidden.
        """
        for name in [b".", b"./x", b"a/./b"]:
            self.assertRefused(b"GET " + name + b" 0", FORBIDDEN)

    def test_absolute(self) -> None:
        """
        An absolute name is forbidden.
        """
        self.assertRefused(b"GET /etc/passwd 0", FORBIDDEN)

    def test_emptyComponent(self) -> None:
        """
        A name with an empty component (C{a//b}, trailing slash) is forbidden.
        """
        self.assertRefused(b"GET a//b 0", FORBIDDEN)
        self.assertRefused(b"GET a/ 0", FORBIDDEN)

    def test_dottedNamesAllowed(self) -> None:
        """
        Names that merely contain dots are ordinary names.
        """
        for name in ["...", "..a", "a..", ".hidden"]:
            line = f"GET {name} 0".encode()
            self.assertEqual(parseRequest(line), Request(name, 0))

    def test_longestLine(self) -> None:
        """
        A line one byte short of the limit (the LF makes it whole) is taken.
        """
        head = b"GET "
        tail = b" 0"
        name = b"n" * (MAX_REQUEST_LINE - 1 - len(head) - len(tail))
        request = parseRequest(head + name + tail)
        self.assertEqual(request.name, name.decode())

    def test_lineTooLong(self) -> None:
        """
        A line that reaches the limit is a bad request.
        """
        name = b"n" * MAX_REQUEST_LINE
        self.assertRefused(b"GET " + name + b" 0", BAD_REQUEST)

    @propertySettings
    @given(
        st.one_of(
            st.binary(max_size=64),
            st.builds(
                lambda verb, name, offset: b" ".join([verb, name, offset]),
                st.sampled_from([b"GET", b"get", b"", b"GET\r"]),
                st.one_of(
                    st.binary(max_size=16),
                    st.text(max_size=16).map(lambda t: t.encode("utf-8")),
                ),
                st.one_of(
                    st.integers(min_value=0).map(lambda n: b"%d" % (n,)),
                    st.binary(max_size=8),
                ),
            ),
        )
    )
    def test_arbitraryBytes(self, line: bytes) -> None:
        """
        Any bytes are refused with L{ProtocolError} or give a request whose
        wire form parses back to the same request.
        """
        try:
            request = parseRequest(line)
        except ProtocolError as e:
            self.assertIn(e.code, (BAD_REQUEST, FORBIDDEN))
            return
        wire = request.toLine()
        self.assertTrue(wire.endswith(b"\n"))
        self.assertEqual(parseRequest(wire[:-1]), request)


class RequestTests(SynchronousTestCase):
    """
    Tests for L{Request.toLine}.
    """

    def test_toLine(self) -> None:
        """
        A request is written as C{GET <name> <offset>} and an LF.
        """
        self.assertEqual(Request("a/b.bin", 42).toLine(), b"GET a/b.bin 42\n")

    def test_toLineUtf8(self) -> None:
        """
        A non-ASCII name is written in UTF-8.
        """
        self.assertEqual(Request("ç", 0).toLine(), b"GET \xc3\xa7 0\n")


class EncodingTests(SynchronousTestCase):
    """
    Tests for L{encodeError} and L{dataHeader}.
    """

    def test_dataHeader(self) -> None:
        """
        A data header announces the payload length in decimal.
        """
        self.assertEqual(dataHeader(1024), b"DATA 1024\n")

    def test_encodeError(self) -> None:
        """
        An error line carries the code and the reason.
        """
        self.assertEqual(encodeError(404, "no such file"), b"ERR 404 no such file\n")

    def test_encodeErrorOneLine(self) -> None:
        """
        Line breaks in the reason are folded so the error stays one line.
        """
        line = encodeError(400, "bad\nthing\r\nhere")
        self.assertEqual(line, b"ERR 400 bad thing here\n")

    def test_encodeErrorDecodes(self) -> None:
        """
        An encoded error decodes to the same refusal.
        """
        events = FrameDecoder().feed(encodeError(416, "offset past the end"))
        self.assertEqual(events, [Refusal(416, "offset past the end")])


class LineReceiverTests(SynchronousTestCase):
    """
    Tests for L{LineReceiver}.
    """

    def test_wholeLine(self) -> None:
        """
        A line fed at once comes back without its LF.
        """
        self.assertEqual(LineReceiver().feed(b"GET a 0\n"), b"GET a 0")

    def test_crKept(self) -> None:
        """
        The receiver leaves a CR in place for the parser to drop.
        """
        self.assertEqual(LineReceiver().feed(b"GET a 0\r\n"), b"GET a 0\r")

    def test_split(self) -> None:
        """
        A line split in two pieces comes back whole after the second.
        """
        receiver = LineReceiver()
        self.assertIsNone(receiver.feed(b"GET a"))
        self.assertEqual(receiver.feed(b" 0\n"), b"GET a 0")

    def test_oneByteAtATime(self) -> None:
        """
        A line fed one byte at a time completes exactly at the LF.
        """
        receiver = LineReceiver()
        data = b"GET big.bin 99\n"
        results = [receiver.feed(data[i : i + 1]) for i in range(len(data))]
        self.assertEqual(results[:-1], [None] * (len(data) - 1))
        self.assertEqual(results[-1], b"GET big.bin 99")

    def test_rest(self) -> None:
        """
        Bytes after the LF are kept in C{rest}.
        """
        receiver = LineReceiver()
        self.assertEqual(receiver.feed(b"GET a 0\nmore"), b"GET a 0")
        self.assertEqual(receiver.rest, b"more")

    def test_limitWithoutLf(self) -> None:
        """
        Reaching the limit with no LF raises a 400 error.
        """
        receiver = LineReceiver(limit=10)
        self.assertIsNone(receiver.feed(b"x" * 9))
        error = self.assertRaises(ProtocolError, receiver.feed, b"x")
        self.assertEqual(error.code, BAD_REQUEST)

    def test_limitOneByteAtATime(self) -> None:
        """
        Bytes fed one at a time with no LF raise at the limit, not later.
        """
        receiver = LineReceiver(limit=10)
        for _ in range(9):
            self.assertIsNone(receiver.feed(b"x"))
        self.assertRaises(ProtocolError, receiver.feed, b"x")

    def test_limitWithLf(self) -> None:
        """
        A complete line at the limit (LF excluded) raises a 400 error.
        """
        receiver = LineReceiver(limit=10)
        error = self.assertRaises(ProtocolError, receiver.feed, b"x" * 10 + b"\n")
        self.assertEqual(error.code, BAD_REQUEST)

    def test_limitWithLfSplit(self) -> None:
        """
        A line that passes the limit only once its LF arrives still raises.
        """
        receiver = LineReceiver(limit=10)
        self.assertIsNone(receiver.feed(b"x" * 5))
        self.assertRaises(ProtocolError, receiver.feed, b"y" * 5 + b"\n")

    def test_longestLine(self) -> None:
        """
        A line one byte short of the limit, plus its LF, is accepted.
        """
        receiver = LineReceiver(limit=10)
        self.assertEqual(receiver.feed(b"x" * 9 + b"\n"), b"x" * 9)

    def test_defaultLimit(self) -> None:
        """
        The default limit is L{MAX_REQUEST_LINE}.
        """
        receiver = LineReceiver()
        self.assertIsNone(receiver.feed(b"x" * (MAX_REQUEST_LINE - 1)))
        self.assertRaises(ProtocolError, receiver.feed, b"x")

    @propertySettings
    @given(st.binary(max_size=40).filter(lambda b: b"\n" not in b), st.data())
    def test_anySplit(self, line: bytes, data: st.DataObject) -> None:
        """
        A line split at any points comes back whole, once, at the last piece.
        """
        wire = line + b"\n"
        cuts = sorted(
            data.draw(st.lists(st.integers(0, len(wire)), max_size=len(wire)))
        )
        pieces = splitAt(wire, cuts)
        receiver = LineReceiver()
        results = [receiver.feed(piece) for piece in pieces if piece]
        self.assertEqual([r for r in results if r is not None], [line])
        self.assertEqual(results[-1], line)


class FrameDecoderTests(SynchronousTestCase):
    """
    Tests for L{FrameDecoder}.
    """

    stream = b"DATA 5\nhelloDATA 1\n DATA 5\nworldEOF\n"

    def test_whole(self) -> None:
        """
        A stream fed at once gives its payload and then L{End}.
        """
        decoder = FrameDecoder()
        payload, others = collect(decoder.feed(self.stream))
        self.assertEqual(payload, b"hello world")
        self.assertEqual(others, [End()])
        self.assertTrue(decoder.finished)
        self.assertEqual(decoder.offset, 11)

    def test_oneByteAtATime(self) -> None:
        """
        A stream fed one byte at a time gives the same payload and L{End}.
        """
        decoder = FrameDecoder()
        events = feedBytewise(decoder, self.stream)
        payload, others = collect(events)
        self.assertEqual(payload, b"hello world")
        self.assertEqual(others, [End()])
        self.assertIsInstance(events[-1], End)
        self.assertEqual(decoder.offset, 11)

    def test_payloadBeforeFrameEnds(self) -> None:
        """
        Payload is handed out as it arrives, before its frame is complete.
        """
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(b"DATA 10\nabc"), [Payload(b"abc")])
        self.assertEqual(decoder.offset, 3)
        self.assertFalse(decoder.atBoundary)

    def test_atBoundary(self) -> None:
        """
        The decoder is at a boundary only between whole frames.
        """
        decoder = FrameDecoder()
        self.assertTrue(decoder.atBoundary)
        decoder.feed(b"DAT")
        self.assertFalse(decoder.atBoundary)
        decoder.feed(b"A 2\na")
        self.assertFalse(decoder.atBoundary)
        decoder.feed(b"b")
        self.assertTrue(decoder.atBoundary)

    def test_crlfHeaders(self) -> None:
        """
        Headers ending in CRLF decode like those ending in LF.
        """
        payload, others = collect(FrameDecoder().feed(b"DATA 2\r\nhiEOF\r\n"))
        self.assertEqual(payload, b"hi")
        self.assertEqual(others, [End()])

    def test_payloadHoldsLf(self) -> None:
        """
        LF and header-like bytes inside a payload are payload.
        """
        inner = b"EOF\nDATA 9\n"
        payload, others = collect(FrameDecoder().feed(encodeStream([inner])))
        self.assertEqual(payload, inner)
        self.assertEqual(others, [End()])

    def test_emptyFrame(self) -> None:
        """
        A C{DATA 0} frame gives no payload and breaks nothing.
        """
        payload, others = collect(FrameDecoder().feed(b"DATA 0\nDATA 1\nxEOF\n"))
        self.assertEqual(payload, b"x")
        self.assertEqual(others, [End()])

    def test_eofAlone(self) -> None:
        """
        C{EOF} alone is an empty, complete stream.
        """
        self.assertEqual(FrameDecoder().feed(b"EOF\n"), [End()])

    def test_errLine(self) -> None:
        """
        An C{ERR} line gives a refusal with its code and reason.
        """
        decoder = FrameDecoder()
        events = decoder.feed(b"ERR 404 no such file\n")
        self.assertEqual(events, [Refusal(404, "no such file")])
        self.assertTrue(decoder.finished)

    def test_errLineOneByteAtATime(self) -> None:
        """
        An C{ERR} line fed one byte at a time gives the same refusal.
        """
        events = feedBytewise(FrameDecoder(), b"ERR 503 gave up\r\n")
        self.assertEqual(events, [Refusal(503, "gave up")])

    def test_errAfterPayload(self) -> None:
        """
        An C{ERR} line after some frames ends the stream with a refusal.
        """
        events = FrameDecoder().feed(b"DATA 2\nabERR 503 no backend\n")
        self.assertEqual(events, [Payload(b"ab"), Refusal(503, "no backend")])

    def test_errWithoutReason(self) -> None:
        """
        An C{ERR} line with a code and no reason has an empty reason.
        """
        self.assertEqual(FrameDecoder().feed(b"ERR 400\n"), [Refusal(400, "")])

    def test_errBadCode(self) -> None:
        """
        An C{ERR} line whose code is not digits is a protocol error.
        """
        self.assertRaises(ProtocolError, FrameDecoder().feed, b"ERR abc x\n")
        self.assertRaises(ProtocolError, FrameDecoder().feed, b"ERR -1 x\n")

    def test_errNoSpace(self) -> None:
        """
        A bare C{ERR} with nothing after it is a protocol error.
        """
        self.assertRaises(ProtocolError, FrameDecoder().feed, b"ERR\n")

    def test_errInvalidUtf8Reason(self) -> None:
        """
        A reason that is not UTF-8 is decoded with replacement characters.
        """
        self.assertEqual(
            FrameDecoder().feed(b"ERR 500 \xff\n"), [Refusal(500, "\ufffd")]
        )

    def test_negativeLength(self) -> None:
        """
        C{DATA -1} is a protocol error.
        """
        self.assertRaises(ProtocolError, FrameDecoder().feed, b"DATA -1\n")

    def test_nonDigitLength(self) -> None:
        """
        C{DATA abc} is a protocol error.
        """
        self.assertRaises(ProtocolError, FrameDecoder().feed, b"DATA abc\n")

    def test_lengthNotPlainDigits(self) -> None:
        """
        Lengths that C{int()} would take but that are not plain digits are
        protocol errors.
        """
        for length in [b"+5", b" 5", b"5 ", b"1_0", b"0x1", b"", "\u0663".encode()]:
            self.assertRaises(ProtocolError, FrameDecoder().feed, b"DATA %s\n" % length)

    def test_lengthTooLarge(self) -> None:
        """
        A length above L{MAX_FRAME_PAYLOAD} is a protocol error.
        """
        header = b"DATA %d\n" % (MAX_FRAME_PAYLOAD + 1,)
        self.assertRaises(ProtocolError, FrameDecoder().feed, header)

    def test_lengthTooManyDigits(self) -> None:
        """
        A length of thousands of digits is a protocol error.
        """
        self.assertRaises(
            ProtocolError, FrameDecoder().feed, b"DATA %s\n" % (b"9" * 900,)
        )

    def test_unknownHeader(self) -> None:
        """
        A header that is neither C{DATA}, C{EOF} nor C{ERR} is a protocol error.
        """
        for line in [b"HELLO\n", b"eof\n", b"EOF \n", b"\n", b"DATA\n"]:
            self.assertRaises(ProtocolError, FrameDecoder().feed, line)

    def test_headerTooLong(self) -> None:
        """
        A header with no LF that reaches the limit is a protocol error.
        """
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(b"D" * (MAX_HEADER_LINE - 1)), [])
        self.assertRaises(ProtocolError, decoder.feed, b"D")

    def test_headerTooLongOneByteAtATime(self) -> None:
        """
        Header bytes fed one at a time raise at the limit.
        """
        decoder = FrameDecoder()
        for _ in range(MAX_HEADER_LINE - 1):
            decoder.feed(b"E")
        self.assertRaises(ProtocolError, decoder.feed, b"E")

    def test_headerTooLongWithLf(self) -> None:
        """
        A complete header line at the limit is a protocol error.
        """
        line = b"ERR 400 " + b"x" * MAX_HEADER_LINE + b"\n"
        self.assertRaises(ProtocolError, FrameDecoder().feed, line)

    def test_bytesAfterEof(self) -> None:
        """
        Bytes after C{EOF} in the same piece are a protocol error.
        """
        self.assertRaises(ProtocolError, FrameDecoder().feed, b"EOF\nX")

    def test_bytesAfterEofLater(self) -> None:
        """
        Bytes fed after C{EOF} was decoded are a protocol error.
        """
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(b"EOF\n"), [End()])
        self.assertRaises(ProtocolError, decoder.feed, b"DATA 1\nx")

    def test_bytesAfterErr(self) -> None:
        """
        Bytes fed after an C{ERR} line are a protocol error.
        """
        decoder = FrameDecoder()
        decoder.feed(b"ERR 404 gone\n")
        self.assertRaises(ProtocolError, decoder.feed, b"EOF\n")

    @propertySettings
    @given(
        st.lists(st.binary(max_size=64), max_size=8),
        st.booleans(),
        st.data(),
    )
    def test_anySplit(
        self, chunks: list[bytes], crlf: bool, data: st.DataObject
    ) -> None:
        """
        A valid stream split at any points decodes to the same payload and
        one L{End}, last.
        """
        wire = encodeStream(chunks, crlf)
        cuts = sorted(
            data.draw(st.lists(st.integers(0, len(wire)), max_size=len(wire)))
        )
        pieces = splitAt(wire, cuts)
        decoder = FrameDecoder()
        events: list[Event] = []
        for piece in pieces:
            events.extend(decoder.feed(piece))
        payload, others = collect(events)
        self.assertEqual(payload, b"".join(chunks))
        self.assertEqual(others, [End()])
        self.assertIsInstance(events[-1], End)
        self.assertEqual(decoder.offset, len(payload))
        self.assertNotIn(Payload(b""), events)

    @propertySettings
    @given(
        st.lists(
            st.one_of(
                st.binary(max_size=12),
                st.sampled_from(
                    [b"DATA ", b"EOF", b"ERR ", b"\n", b"\r\n", b" ", b"-"]
                ),
                st.integers(0, 2**70).map(lambda n: b"%d" % (n,)),
            ),
            max_size=12,
        ),
        st.booleans(),
    )
    def test_arbitraryBytes(self, tokens: list[bytes], bytewise: bool) -> None:
        """
        Arbitrary bytes either decode or raise L{ProtocolError}, never
        another exception.
        """
        wire = b"".join(tokens)
        decoder = FrameDecoder()
        try:
            if bytewise:
                events = feedBytewise(decoder, wire)
            else:
                events = decoder.feed(wire)
        except ProtocolError:
            return
        for event in events:
            self.assertIsInstance(event, (Payload, End, Refusal))
