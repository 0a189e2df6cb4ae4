"""``nexus hub``: the Hub's command line (``hub.cli``) with what only the
composition root may give it: the provider probe of the data plane
(``ingress.probe``), for the probe routes of the admin API."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from hub.cli import main as hub_main
    from ingress.probe import probe

    return hub_main(argv, prober=probe)
