"""Media: RTP and RTCP on the wire (``rtp``), per-stream statistics (``stats``, with its NumPy twin
``vec``) and G.711 (``g711``). Sans-IO: arrival times are always passed in.
"""
