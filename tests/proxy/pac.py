"""Evaluate a PAC file as a browser does: in a JavaScript engine (Node.js,
which the suite installs for its OIDC provider), with the PAC helper
functions the tests' PAC files use, for many hosts in one run."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

# The PAC helpers Nexus's PAC files call, as browsers define them.
_HELPERS = r"""
function isPlainHostName(h) { return h.indexOf(".") < 0; }
function dnsDomainIs(h, d) { return h.length >= d.length && h.substring(h.length - d.length) === d; }
function shExpMatch(s, p) {
  var esc = p.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  var re = new RegExp("^" + esc.replace(/\*/g, ".*").replace(/\?/g, ".") + "$");
  return re.test(s);
}
"""


def find_proxy(pac: str, hosts: list[str]) -> dict[str, str]:
    """``FindProxyForURL`` of ``pac`` for each host (an https URL to it)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs Node.js (the README's install command installs it)")
    script = (
        _HELPERS
        + pac
        + "\nconst hosts = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        + "const out = {};\n"
        + "for (const h of hosts) out[h] = FindProxyForURL('https://' + h + '/', h);\n"
        + "process.stdout.write(JSON.stringify(out));\n"
    )
    done = subprocess.run(
        [node, "-e", script], input=json.dumps(hosts).encode(), capture_output=True, timeout=30, check=True
    )
    result: dict[str, str] = json.loads(done.stdout)
    return result


def proxies_for(pac: str, host: str = "api.openai.com") -> list[str]:
    """The proxies ``pac`` gives ``host``, in the order a browser tries them
    (DIRECT, if it is the last resort, left out)."""
    return [p.split(" ", 1)[1] for p in find_proxy(pac, [host])[host].split("; ") if p.startswith("PROXY ")]
