# Sourced by scripts/demo.sh and scripts/test.sh: installs what they need on a
# fresh Debian machine and leaves the project's virtual environment in .venv.
# Each step says what it does; steps that are already done are skipped.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

need_packages=()
for tool in rsync:rsync nc:netcat-openbsd ip:iproute2 nft:nftables; do
    command -v "${tool%%:*}" >/dev/null || need_packages+=("${tool##*:}")
done
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    need_packages+=(python3-venv)
fi
if ((${#need_packages[@]})); then
    echo "setup: installing ${need_packages[*]} with apt-get"
    if [ "$(id -u)" != 0 ]; then
        echo "setup: need root to install ${need_packages[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating the virtual environment $VENV"
    python3 -m venv "$VENV"
fi
stamp="$VENV/.reloc-installed"
if [ ! -e "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "setup: installing reloc and its test tools into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test]"
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
