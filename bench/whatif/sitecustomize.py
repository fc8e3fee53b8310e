"""
A what-if for bench/PROFILE.md, not product code: with this folder on
PYTHONPATH, every Twisted TCP connection reads up to 256 KiB per recv (not
64 KiB), pauses its producer only past 256 KiB of buffered data, and hands
the kernel up to 1 MiB per send (not 128 KiB).

    PYTHONPATH=bench/whatif bench/run.sh --only throughput --runs 3
"""

from twisted.internet import abstract, tcp

tcp.Connection.bufferSize = 256 * 1024
abstract.FileDescriptor.SEND_LIMIT = 1024 * 1024
