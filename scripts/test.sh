#!/usr/bin/env bash
# The whole test suite, on a fresh machine: system packages for the interop tests
# (as root), a venv with the test dependencies, lint, types, then pytest.
# Interop tests FAIL (not skip) here when their program is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v puppet >/dev/null 2>&1 || need_pkgs+=(puppet-agent)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
[ -x /usr/sbin/apache2 ] || need_pkgs+=(apache2)
[ -e /usr/lib/apache2/modules/mod_wsgi.so ] || need_pkgs+=(libapache2-mod-wsgi-py3)
# The passenger backend of 'splitca apache-config' must pass Apache's config test too.
[ -e /usr/lib/apache2/modules/mod_passenger.so ] || need_pkgs+=(libapache2-mod-passenger)
# The real `puppetserver ca` tool (a ruby library, no binary) for tests/test_puppetserver_ca_tool.py.
command -v ruby >/dev/null 2>&1 && ruby -e 'require "puppetserver/ca/cli"' >/dev/null 2>&1 \
  || need_pkgs+=(ruby-puppetserver-ca-cli)
# A real PostgreSQL (tests/pg_harness.py runs its own server, as nobody, on a free port) for
# the PostgreSQL store, and HAProxy in front of several `splitca serve` replicas (tests/test_ha.py, docs/ha.md).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_pkgs+=(postgresql)
[ -x /usr/sbin/haproxy ] || need_pkgs+=(haproxy)
# mkfs.ext4 and e2fsck for the loop ext4 images of tests/test_power_cut.py.
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /sbin/mkfs.ext4 ] || need_pkgs+=(e2fsprogs)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "==> missing Debian packages (${need_pkgs[*]}); run as root to install them" >&2
  fi
fi
# Debian's apache2 package starts a service on port 80; the tests run their own Apaches.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet apache2 2>/dev/null; then
  systemctl stop apache2 || true
fi

PY=${PYTHON:-python3}
VENV=${SPLITCA_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PY" -m venv "$VENV"
fi
echo "==> installing splitca with test dependencies"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"

echo "==> ruff"
"$VENV/bin/ruff" check splitca tests benchmarks
"$VENV/bin/ruff" format --check splitca tests benchmarks
echo "==> mypy"
"$VENV/bin/mypy"
echo "==> pytest"
export SPLITCA_REQUIRE_INTEROP=1
export PATH="$PWD/$VENV/bin:$PATH"
exec "$VENV/bin/python" -m pytest "$@"
