"""sipflow: read SIP signalling and RTP media from packet captures, and see what happened.

    >>> import sipflow
    >>> a = sipflow.analyze("samples/basic-call-rtp.pcap")        # doctest: +SKIP
    >>> for call in a.calls: print(call.call_id, call.outcome.value)   # doctest: +SKIP

The public API: ``analyze`` (captures -> ``Analysis``), ``Analyzer`` (incremental feeding and
``snapshot()``), ``AnalyzerOptions`` (what may be forgotten on endless input), ``parse_message`` /
``parse_sdp`` (bytes -> SIP / SDP objects) and the error types.
"""
__version__ = "0.1.0"

from sipflow.analysis.model import Analysis, Filter  # noqa: E402
from sipflow.analysis.analyzer import Analyzer, analyze  # noqa: E402
from sipflow.analysis.options import AnalyzerOptions  # noqa: E402
from sipflow.errors import CaptureError, ParseError, ProbeError, SipflowError  # noqa: E402
from sipflow.sip.sdp import parse_sdp  # noqa: E402
from sipflow.sip.message import SipMessage, parse_message  # noqa: E402

__all__ = ["analyze", "Analysis", "Analyzer", "AnalyzerOptions", "Filter", "parse_message", "parse_sdp", "SipMessage",
           "SipflowError", "CaptureError", "ParseError", "ProbeError", "__version__"]
