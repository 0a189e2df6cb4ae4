"""The control plane: orgs, IAM, virtual keys, vault, registry, config sync."""
