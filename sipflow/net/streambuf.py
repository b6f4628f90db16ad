"""Byte streams with frame references, shared by the TCP/WebSocket layers here and SIP framing in ``sip``.

Owns ``StreamBuffer``: in-order bytes of one direction of a stream that remember which frame carried
which byte, so a message cut out of the stream can name every frame it came from.
"""
from __future__ import annotations

from typing import List, Tuple
class StreamBuffer:
    """In-order bytes of one direction of a stream, remembering which frame carried which byte, so a
    message cut out of it can name every frame it came from."""
    __slots__ = ("data", "marks")

    def __init__(self) -> None:
        self.data = bytearray()
        self.marks: List[Tuple[int, int]] = []  # (end offset in data, frame)

    def append(self, chunk: bytes, frame: int) -> None:
        self.data += chunk
        self.marks.append((len(self.data), frame))

    def take(self, n: int) -> Tuple[bytes, Tuple[int, ...]]:
        """Remove the first ``n`` bytes; return them and the frames that carried them."""
        out = bytes(self.data[:n])
        del self.data[:n]
        # A mark covers [previous end, end); it overlaps [0, n) if previous end < n.
        frames, keep, prev = [], [], 0
        for end, frame in self.marks:
            if prev < n and frame not in frames:
                frames.append(frame)
            if end > n:
                keep.append((end - n, frame))
            prev = end
        self.marks = keep
        return out, tuple(frames)

    def clear(self) -> None:
        self.data.clear()
        self.marks.clear()

    def __len__(self) -> int:
        return len(self.data)


