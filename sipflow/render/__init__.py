"""What the user reads: tables, CSV and JSON (``tables``), ladder layout and its text painter (``ladder``).
Renderers read an ``Analysis``; they never see packets.
"""
