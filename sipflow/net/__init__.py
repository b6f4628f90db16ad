"""Network layers, sans-IO: captured frames in, transport payloads (``Datagram``) out.

``link`` holds the one link-type table, ``addr`` the datagram value and address helpers, ``streambuf``
the frame-tracking byte buffer, ``decoder`` the layers themselves (IP, defragmentation, UDP, TCP,
SCTP, WebSocket, HEP, tunnels).
"""
from sipflow.net.addr import Datagram, fmt_endpoint, is_private
from sipflow.net.decoder import Decoder
from sipflow.net.link import LINK_TYPES, LinkType
from sipflow.net.streambuf import StreamBuffer

__all__ = ["Datagram", "Decoder", "LINK_TYPES", "LinkType", "StreamBuffer", "fmt_endpoint", "is_private"]
