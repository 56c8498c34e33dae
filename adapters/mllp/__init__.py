"""HL7 v2 over MLLP: the framing, the asyncio listener (``listener.py``) and the outbound sender
(``client.py``, registered as the ``mllp`` destination scheme by ``wiring.py``)."""
