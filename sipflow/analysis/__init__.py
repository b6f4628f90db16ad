"""From decoded packets to what happened: the analyzer loop (``analyzer``), transactions, dialogs,
calls and registrations (``dialogs``), and the result model every renderer reads (``model``).
"""
from sipflow.analysis.model import Analysis, Filter, Malformed

__all__ = ["Analysis", "Filter", "Malformed"]
