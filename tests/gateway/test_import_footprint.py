"""The gateway's resident memory starts with what it imports: the modules a
deployment may never use (the semantic cache's numpy, Vertex's
cryptography, presidio and spaCy for NER, tldextract, tiktoken before a
quota needs it) stay unloaded until a feature that needs them starts.
tests/benchmarks/rss_breakdown.py shows the figures."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numpy", "cryptography", "presidio_analyzer", "spacy", "tldextract", "tiktoken", "requests")


def test_gateway_and_hooks_import_without_the_heavy_optional_modules() -> None:
    code = (
        "import sys\n"
        "import ingress.gateway.app, ingress.gateway.cli, ingress.hooks\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
