"""Agents: the Hub's agent CA, one-time enrolment tokens, enrolment (the
device's mTLS and attestation keys signed), revocation.  The record of each
enrolled agent is the contract in ``streams.agents`` (proxies read it)."""
