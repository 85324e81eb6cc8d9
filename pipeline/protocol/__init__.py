"""Sans-IO core of the transfer protocol (Appendices A and B).

Nothing in this package performs I/O or imports asyncio, aiortc,
multiprocessing or filesystem modules; time enters as an argument.
``tests/unit/test_protocol_purity.py`` enforces that.
"""
