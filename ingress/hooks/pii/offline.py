"""Keep presidio offline.

presidio's email recognizer validates the domain with ``tldextract``, whose
module-level extractor downloads the public suffix list on first use unless
``TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS`` is empty *when tldextract is
imported*.  On an air-gapped node that download hangs the first request
with an email in it.  This module must be imported before presidio: it sets
the variable and, in case tldextract was imported earlier by someone else,
replaces the extractor with one that uses the snapshot bundled in the wheel
and writes no cache.
"""

from __future__ import annotations

import os

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import tldextract
import tldextract.tldextract as _tld

_tld.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
