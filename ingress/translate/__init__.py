"""Caller grammars: the wire formats clients speak to Nexus, each decoded to
the canonical request and rendered back from canonical responses, chunks and
errors.  Pure functions and small stateful stream encoders; no I/O.

- ``grammar``: the interface a grammar implements (``Grammar``,
  ``StreamEncoder``) and ``Failure``, an error as the caller sees it;
- ``openai_chat`` (``OPENAI_CHAT``), ``anthropic_messages``
  (``ANTHROPIC_MESSAGES``), ``responses`` (``RESPONSES``),
  ``gemini_generate`` (``GEMINI_GENERATE``): one module per grammar, what
  it writes typed in the ``*_wire`` module beside it (Gemini's in
  ``adapters.gemini.wire``, the provider side's structs);
- ``responses_native``: what a native Responses target's answers say (usage,
  text and calls) while they are relayed as they are;
- ``native_text`` (the prose of a caller's own body, for the hooks) and
  ``shown_model`` (the caller's model name in relayed bytes).
"""
