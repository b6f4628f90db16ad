"""The active probe: what every probe shares (``common``: target, outcome, socket channel; ``transaction``:
the non-INVITE client transaction), OPTIONS (``options``), REGISTER (``register``), test calls
(``call``), and the pcap recording of its own traffic (``recorder``).
"""
