"""Caller grammars: the wire formats clients speak to the gateway (OpenAI
chat, Anthropic Messages, OpenAI Responses), each decoded to the canonical
request and rendered back from canonical responses, chunks and errors.
Pure functions and small stateful stream encoders; no I/O."""
