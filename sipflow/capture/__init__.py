"""Capture sources: where packets come from.

``files`` reads pcap and pcapng files (plain, gzip-compressed or on standard input), several merged by
time. Every source yields the same records; nothing here decodes a packet.
"""
from sipflow.capture.files import CaptureFile, open_captures, records

__all__ = ["CaptureFile", "open_captures", "records"]
