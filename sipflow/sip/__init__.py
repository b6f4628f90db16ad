"""SIP itself, sans-IO: messages (the cheap scan and the full parse), stream framing, SDP, digest.

``message`` parses a whole message losslessly; ``scan`` reads only what the analyzer needs from each
message, fast; ``framing`` cuts messages out of byte streams; ``sdp`` reads session descriptions;
``digest`` computes and checks HTTP digest credentials (RFC 7616/8760).
"""
from sipflow.sip.message import SipMessage, parse_message

__all__ = ["SipMessage", "parse_message"]
