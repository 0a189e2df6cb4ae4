"""Keep presidio offline.

presidio's email recognizer validates the domain with ``tldextract``, whose
module-level extractor downloads the public suffix list on first use unless
``TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS`` is empty *when tldextract is
imported*.  On an air-gapped node that download hangs the first request
with an email in it.  Importing this module sets the variable (cheap: the
pattern engine never imports tldextract, see ``suffixes``); ``guard()``, run
before presidio is imported (NER mode), also replaces the extractor with one
that uses the snapshot bundled in the wheel and writes no cache.  If
tldextract was imported earlier by someone else, importing this module
replaces it at once.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")


def guard() -> None:
    import tldextract
    import tldextract.tldextract as _tld

    if getattr(_tld.TLD_EXTRACTOR, "_nexus_offline", False):
        return
    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
    extractor._nexus_offline = True  # type: ignore[attr-defined]
    _tld.TLD_EXTRACTOR = extractor


if "tldextract" in sys.modules:
    guard()
