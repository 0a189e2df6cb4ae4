"""The Hub's credential vault: sealing credentials as they are stored, the
key versions, rotation with a background rewrap, retirement, and the probes
that check a credential against its provider.  The cryptography and the
bucket are the contract in ``streams.vault``; docs/hub.md ("Credential
vault") has the design and the threat model."""
