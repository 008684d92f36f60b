#!/usr/bin/env bash
# Install the pinned peers the benchmark compares against, outside any venv of tokentop:
#   $TOKENTOP_BENCH_PEERS/ccusage/              npm: ccusage 20.0.24 + its native binary
#   $TOKENTOP_BENCH_PEERS/claude-monitor-venv/  pip: claude-monitor 4.0.0 in its own venv
#   $TOKENTOP_BENCH_PEERS/tokscale/             npm: tokscale 1.4.3 + its native core + bun, and
#                                               LiteLLM's price list (from the litellm wheel) to
#                                               seed its price cache: it then runs offline
# Default location: bench/.peers (gitignored). Needs node/npm and python3 >= 3.9.
set -euo pipefail

CCUSAGE_VERSION=20.0.24
MONITOR_VERSION=4.0.0
TOKSCALE_VERSION=1.4.3
LITELLM_VERSION=1.109.1  # the price list tokentop's own prices.json comes from
PEERS="${TOKENTOP_BENCH_PEERS:-$(cd "$(dirname "$0")" && pwd)/.peers}"
PYTHON="${PYTHON:-python3}"

native_package() {
  local os arch
  case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    *) echo "unsupported OS $(uname -s)" >&2; exit 1 ;;
  esac
  case "$(uname -m)" in
    x86_64 | amd64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "unsupported CPU $(uname -m)" >&2; exit 1 ;;
  esac
  echo "@ccusage/ccusage-${os}-${arch}@${CCUSAGE_VERSION}"
}

mkdir -p "$PEERS/ccusage"
npm install --no-audit --no-fund --prefix "$PEERS/ccusage" \
  "ccusage@${CCUSAGE_VERSION}" "$(native_package)"
# The npm launcher makes the binary executable on first use; do it now so the
# benchmark can call the binary directly.
chmod +x "$PEERS"/ccusage/node_modules/@ccusage/ccusage-*/bin/ccusage

"$PYTHON" -m venv "$PEERS/claude-monitor-venv"
"$PEERS/claude-monitor-venv/bin/pip" install --quiet "claude-monitor==${MONITOR_VERSION}"

mkdir -p "$PEERS/tokscale"
[ -f "$PEERS/tokscale/package.json" ] || echo '{"name": "tokscale-bench", "private": true}' \
  > "$PEERS/tokscale/package.json"
(cd "$PEERS/tokscale" && npm install --no-audit --no-fund "tokscale@${TOKSCALE_VERSION}" \
  "@tokscale/core-linux-x64-gnu@${TOKSCALE_VERSION}" bun)
"$PYTHON" -m pip download --quiet --no-deps "litellm==${LITELLM_VERSION}" -d "$PEERS/tokscale/wheel"
"$PYTHON" - "$PEERS/tokscale" <<'PY'
import glob, sys, zipfile
folder = sys.argv[1]
wheel = zipfile.ZipFile(sorted(glob.glob(f"{folder}/wheel/litellm-*.whl"))[-1])
with open(f"{folder}/model_prices.json", "wb") as out:
    out.write(wheel.read("litellm/model_prices_and_context_window_backup.json"))
PY
rm -rf "$PEERS/tokscale/wheel"

"$PEERS"/ccusage/node_modules/@ccusage/ccusage-*/bin/ccusage --version
"$PEERS/claude-monitor-venv/bin/claude-monitor" --version
"$PEERS/tokscale/node_modules/.bin/bun" --version
echo "peers installed in $PEERS"
