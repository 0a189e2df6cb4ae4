"""The reverse direction of three providers' codecs, for tests only:
canonical answers rendered as Gemini, Bedrock Converse and Cohere v2 wire
bytes (unary and streamed), and a Gemini generateContent request read back
into a canonical one.

Nexus itself never writes these formats (it calls these providers; it does
not serve their APIs), so the code lives here, where the round-trip tests
feed the real decoders with it (``test_roundtrip.py``) and read the real
encoder's requests back (``test_gemini.py``).  Each is checked against the
providers' documented examples in ``tests/fixtures/``.
"""
