#!/usr/bin/env bash
# Run a demo CA on https://127.0.0.1:8140: creates a venv, installs splitca, makes a
# demo CA under ./var/demo on first run (later runs reuse it), and serves it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${SPLITCA_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# pip install -e only when the venv lacks this checkout as installed: the stamp holds
# pyproject.toml's hash (dependencies, entry points), the checkout and the Python version.
# The code itself is an editable install: changing it needs no reinstall.
STAMP="$VENV/.splitca-install-stamp"
WANT=$("$VENV/bin/python" -c 'import hashlib, os, sys
print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest(), os.getcwd(), sys.version.split()[0])')
if [ -x "$VENV/bin/splitca" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
  echo "splitca in $VENV is up to date with pyproject.toml; not reinstalling"
else
  echo "Installing splitca into $VENV (pip install -e .)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e .
  printf '%s\n' "$WANT" > "$STAMP"
fi
DATA=${SPLITCA_DEMO_DIR:-$PWD/var/demo}
CONFIG="$DATA/splitca.yaml"
mkdir -p "$DATA"
if [ ! -f "$CONFIG" ]; then
  cat > "$CONFIG" <<YAML
# Demo configuration written by scripts/serve.sh (see docs/configuration.md).
cadir: $DATA/ca
certname: localhost
dns_alt_names: [puppet, localhost, "IP:127.0.0.1"]
listen: 127.0.0.1
port: ${SPLITCA_PORT:-8140}
# Demo only: sign every valid CSR. Use false, an allowlist or 'registry' in production.
autosign: true
YAML
fi
"$VENV/bin/splitca" --config "$CONFIG" setup
cat <<TXT

Point a Puppet agent at this CA, for example:
  puppet ssl bootstrap --ca_server 127.0.0.1 --ca_port ${SPLITCA_PORT:-8140} --certname agent1.example.com
Operate it (in another terminal):
  $VENV/bin/splitca --config $CONFIG list --all
  $VENV/bin/splitca --config $CONFIG revoke agent1.example.com

TXT
exec "$VENV/bin/splitca" --config "$CONFIG" serve
