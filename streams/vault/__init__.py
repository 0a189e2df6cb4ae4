"""The credential vault's contract, shared by the Hub (which seals, rotates
and rewraps) and every node (which opens, just in time, in memory): master
key sources, versioned key-encryption keys, envelope encryption, and the
bucket the wrapped data keys live in.  docs/hub.md ("Credential vault") has
the design and its threat model."""
