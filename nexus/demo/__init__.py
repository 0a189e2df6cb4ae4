"""The demo configuration shipped with the package (used by ``nexus up``)."""
