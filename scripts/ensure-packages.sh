#!/usr/bin/env bash
# Installs whatever in the package lists is missing (apt-get, as root or via
# sudo). Does nothing, and needs no network, when everything is installed.
#   ensure-packages.sh [--update] [LIST...]
#     --update  always run apt-get update first (CI)
#     LIST      package list files (default: scripts/packages.txt)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

update=0
if [[ "${1:-}" == "--update" ]]; then update=1; shift; fi
lists=("$@")
((${#lists[@]})) || lists=("$here/packages.txt")
mapfile -t wanted < <(cat "${lists[@]}" | sed -e 's/#.*//' -e 's/[[:space:]]//g' | grep -v '^$')
missing=()
for pkg in "${wanted[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "ensure-packages: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
  fi
}

if ((update)) || ((${#missing[@]})); then
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
fi
if ((${#missing[@]})); then
  echo "ensure-packages: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
