#!/usr/bin/env bash
# Install the Debian packages the tests need (scripts/system-deps.txt), when they are missing.
#
#   scripts/system-deps.sh            as root with apt-get: install what is missing; otherwise say
#                                     what is missing and that the tests needing it will skip (exit 0)
#   scripts/system-deps.sh --strict   the same, but exit 1 when something is missing and cannot be
#                                     installed (CI: nothing may skip)
#   scripts/system-deps.sh --list     print the package names and exit
#
# Used by `make test` and by .ci/run; the list lives only in system-deps.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
strict=0
case "${1:-}" in
  --strict) strict=1 ;;
  --list) grep -v '^#' "$here/system-deps.txt" | awk 'NF {print $1}'; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--strict|--list]" >&2; exit 2 ;;
esac

installed() {  # $1 = package: installed per dpkg, or (no dpkg) everything it provides is present
  local pkg="$1"; shift
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && return 0
  fi
  local thing
  for thing in "$@"; do
    if [[ "$thing" == /* ]]; then
      compgen -G "$thing" >/dev/null || return 1
    else
      PATH="$PATH:/usr/sbin:/sbin" command -v "$thing" >/dev/null 2>&1 || return 1
    fi
  done
}

missing=()
while read -r pkg provides; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  # shellcheck disable=SC2086  # provides is a list of words
  installed "$pkg" $provides || missing+=("$pkg")
done < "$here/system-deps.txt"

[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

why="not root"; [ "$(id -u)" -eq 0 ] && why="no apt-get"
echo "system-deps: cannot install ${missing[*]} ($why): the tests that need them will skip;" \
     "as root: apt-get install ${missing[*]}" >&2
[ "$strict" -eq 1 ] && exit 1
exit 0
