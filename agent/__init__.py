"""The desktop agent: local interception, local hooks, attestation."""
