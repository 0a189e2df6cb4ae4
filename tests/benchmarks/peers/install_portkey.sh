#!/usr/bin/env bash
# Install the Portkey gateway (a benchmark peer) from npm into its own folder.
#   usage: install_portkey.sh [DIR]   (default ~/.cache/nexus-bench/portkey)
# 1.15.2's streaming breaks with @hono/node-server >= 1.14 ("TypeError:
# immutable"), so an npm `overrides` entry pins 1.13.8.  Idempotent.
# NOTE: the gateway listens on every interface unless given a loopback
# hostname; the harness always starts it with --host 127.0.0.1 (see run.py).
set -euo pipefail
VERSION=1.15.2
DIR=${1:-${NEXUS_BENCH_CACHE:-$HOME/.cache/nexus-bench}/portkey}
if [ -f "$DIR/.nexus-bench-complete" ] && [ -f "$DIR/node_modules/@portkey-ai/gateway/build/start-loopback.js" ]; then
  echo "portkey $VERSION already installed in $DIR"; exit 0
fi
command -v npm >/dev/null || { echo "npm is not installed" >&2; exit 1; }
mkdir -p "$DIR"
cat > "$DIR/package.json" <<JSON
{
  "name": "nexus-bench-portkey",
  "private": true,
  "dependencies": { "@portkey-ai/gateway": "$VERSION" },
  "overrides": { "@hono/node-server": "1.13.8" }
}
JSON
cd "$DIR"
npm install --no-audit --no-fund --loglevel=error
HONO=$(node -p "JSON.parse(require('fs').readFileSync('node_modules/@hono/node-server/package.json','utf8')).version")
[ "$HONO" = 1.13.8 ] || { echo "@hono/node-server is $HONO, expected the 1.13.8 override" >&2; exit 1; }
# The shipped start script calls serve({fetch, port}) with no hostname, i.e.
# every interface.  Write a copy next to it (its relative imports still
# resolve) that binds loopback only, and refuse to go on if the patch missed.
BUILD=node_modules/@portkey-ai/gateway/build
sed 's/({fetch:Lu.fetch,port:Ku})/({fetch:Lu.fetch,port:Ku,hostname:"127.0.0.1"})/' \
  "$BUILD/start-server.js" > "$BUILD/start-loopback.js"
grep -q 'port:Ku,hostname:"127.0.0.1"' "$BUILD/start-loopback.js" \
  || { echo "could not patch the Portkey start script to bind 127.0.0.1" >&2; rm -f "$BUILD/start-loopback.js"; exit 1; }
touch "$DIR/.nexus-bench-complete"
echo "portkey $VERSION installed in $DIR"
