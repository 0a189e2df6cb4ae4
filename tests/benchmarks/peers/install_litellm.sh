#!/usr/bin/env bash
# Install the LiteLLM proxy (a benchmark peer) into its OWN venv, never the
# project's: its dependency set conflicts with ours.  Idempotent.
#   usage: install_litellm.sh [VENV_DIR]   (default ~/.cache/nexus-bench/litellm-venv)
# 1.109.1 exactly: 1.107.x does not install here.  Its requirements are
# installed from its own metadata with certifi and litellm-proxy-extras relaxed
# to what the package index has.
set -euo pipefail
VERSION=1.109.1
VENV=${1:-${NEXUS_BENCH_CACHE:-$HOME/.cache/nexus-bench}/litellm-venv}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
if [ -x "$VENV/bin/litellm" ] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$VERSION')" 2>/dev/null \
   && [ -f "$VENV/.nexus-bench-complete" ]; then
  echo "litellm $VERSION already installed in $VENV"; exit 0
fi
mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "litellm==$VERSION"
"$VENV/bin/python" "$HERE/litellm_requirements.py" > "$VENV/requirements-relaxed.txt"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$VENV/requirements-relaxed.txt"
"$VENV/bin/python" -c "import litellm.proxy.proxy_server" >/dev/null
touch "$VENV/.nexus-bench-complete"
echo "litellm $VERSION installed in $VENV"
