"""Small pieces every provider codec shares: an incremental SSE parser,
error helpers, strict JSON decoding into wire Structs, URL joining."""
