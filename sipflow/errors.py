"""Errors sipflow raises on purpose.

Owns the small error hierarchy. Protocol code never raises for a capture that breaks the protocol
(that is recorded as an anomaly or a malformed record); these exceptions are for input sipflow cannot
read at all, and they are turned into one clear line and an exit code at one boundary, the CLI.
"""


class SipflowError(Exception):
    """Base of every error sipflow raises deliberately."""


class CaptureError(SipflowError):
    """A capture file cannot be opened or read (missing, not a capture, unknown link type)."""


class ParseError(SipflowError):
    """Bytes that should hold a SIP message (or an SDP body) do not."""


class ProbeError(SipflowError):
    """The active probe could not run (bad target, socket failure)."""
