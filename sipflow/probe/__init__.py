"""The active probe: OPTIONS and REGISTER (``options_register``), test calls (``call``), and the pcap
recording of its own traffic (``recorder``).
"""
