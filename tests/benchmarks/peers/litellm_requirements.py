"""Print LiteLLM's own requirements (base + the ``proxy`` extra), one per line,
with the pins this machine's package index cannot satisfy relaxed to the bare
name (``certifi``, ``litellm-proxy-extras``).  Run with the peer venv's Python
after ``pip install --no-deps litellm==X``: it reads the installed metadata."""

from __future__ import annotations

from importlib.metadata import requires

from pip._vendor.packaging.requirements import Requirement

RELAXED = {"certifi", "litellm-proxy-extras"}

for line in requires("litellm") or ():
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": "proxy"}):
        continue
    if req.name in RELAXED:
        print(req.name)
        continue
    req.marker = None
    print(str(req))
