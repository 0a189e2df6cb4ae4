"""The PAC file and the onboarding text of the compliance proxy, as plain
text builders: the Hub serves them for the whole fleet (``hub.fleet.proxies``)
and a proxy node's admin listener for itself (``ingress.proxy.admin``, a
proxy run without a Hub).  Here, below both, because the hub may not import
ingress (tests/architecture).

The addresses given are written into JavaScript strings: callers pass only
addresses ``streams.config_proxy.parse_proxy_address`` accepted (a host name
or IP and a port; no quote, space or semicolon can be in one).
"""

from __future__ import annotations

from collections.abc import Sequence

PAC_TYPE = "application/x-ns-proxy-autoconfig"

# Plain and private names stay direct: an intranet host is no AI service,
# and the proxy refuses private targets anyway (proxy.block_private_targets).
_DIRECT_RULES = (
    '  if (isPlainHostName(host) || host === "localhost" || dnsDomainIs(host, ".localhost") ||\n'
    '      shExpMatch(host, "127.*") || shExpMatch(host, "10.*") || shExpMatch(host, "192.168.*"))\n'
    '    return "DIRECT";\n'
)


def pac_file(proxies: Sequence[str]) -> str:
    """Everything through the proxies (shadow-AI discovery needs every host),
    then DIRECT; plain and private names direct.  With several, each host
    goes to one node first, chosen by a hash of its name, and to the others
    after it in turn (a browser tries the next when one does not answer):
    hosts spread over the fleet, and one host's connections meet the node
    that already holds its leaf certificate, pinning state and upstream
    connections.  With no proxy, a PAC that sends everything direct and
    says why."""
    if not proxies:
        return (
            "// No Nexus proxy node is online now: everything goes direct until one reports.\n"
            "function FindProxyForURL(url, host) {\n"
            '  return "DIRECT";\n'
            "}\n"
        )
    if len(proxies) == 1:
        route = f'  return "PROXY {proxies[0]}; DIRECT";\n'
        return f"function FindProxyForURL(url, host) {{\n{_DIRECT_RULES}{route}}}\n"
    nodes = ", ".join(f'"PROXY {p}"' for p in proxies)
    return (
        "function FindProxyForURL(url, host) {\n"
        f"{_DIRECT_RULES}"
        f"  var nodes = [{nodes}];\n"
        "  var h = 0;\n"
        "  for (var i = 0; i < host.length; i++) h = (h * 31 + host.charCodeAt(i)) % 1000003;\n"
        "  var order = [];\n"
        "  for (var j = 0; j < nodes.length; j++) order.push(nodes[(h + j) % nodes.length]);\n"
        '  return order.join("; ") + "; DIRECT";\n'
        "}\n"
    )


def onboarding_text(*, proxies: Sequence[str], pac_url: str, ca_url: str, served_by: str) -> str:
    """How to point each kind of client at the proxy and make it trust the
    proxy's CA (saved as nexus-ca.pem from ``ca_url``)."""
    proxy = f"http://{proxies[0]}" if proxies else "http://PROXY-HOST:3128"
    if not proxies:
        listed = "none online now (the PAC file sends everything direct until one reports)"
    else:
        listed = ", ".join(f"http://{p}" for p in proxies)
    return f"""Nexus compliance proxy: onboarding
(served by {served_by})

Proxy:          {listed}
PAC file:       {pac_url}
CA certificate: {ca_url}   (save it as nexus-ca.pem)

  curl -fsS -o nexus-ca.pem {ca_url}

Python (openai, anthropic, requests, httpx read certifi, not the OS store):
  export HTTPS_PROXY={proxy}
  export SSL_CERT_FILE=$PWD/nexus-ca.pem REQUESTS_CA_BUNDLE=$PWD/nexus-ca.pem
Node.js (adds to its built-in roots):
  export HTTPS_PROXY={proxy} NODE_EXTRA_CA_CERTS=$PWD/nexus-ca.pem
curl:
  curl --proxy {proxy} --cacert nexus-ca.pem https://api.openai.com/v1/models
Browsers (Chromium and Firefox on Linux read an NSS database):
  certutil -d sql:$HOME/.pki/nssdb -A -t "C,," -n nexus-proxy -i nexus-ca.pem
  (certutil reads the first certificate of a file: during a CA rotation
  nexus-ca.pem holds two; csplit it and add each under its own name),
  then set the PAC URL above as the automatic proxy configuration
  (chromium --proxy-pac-url={pac_url}).
macOS / Windows: import nexus-ca.pem into the system trust store (MDM profile),
and set the PAC URL in the network settings.
"""
