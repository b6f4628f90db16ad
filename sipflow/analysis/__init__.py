"""From decoded packets to what happened.

``analyzer`` runs the packet loop (``feed``, ``run``) and takes ``snapshot``s; ``messages`` keeps the
lean record of each SIP message and its bytes; ``dialogs`` rebuilds transactions, dialogs, calls and
registrations by its state tables, in the vocabulary of ``kinds``; ``join`` ties RTP streams to calls;
``snapshot`` copies all of it into the immutable ``records`` of an ``Analysis`` (``model``: filters,
KPIs, the JSON form); ``totals`` keeps what stays of calls summarised out of memory under ``options``.
"""
from sipflow.analysis.model import Analysis, Filter, Malformed
from sipflow.analysis.options import AnalyzerOptions

__all__ = ["Analysis", "AnalyzerOptions", "Filter", "Malformed"]
