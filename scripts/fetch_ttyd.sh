#!/usr/bin/env bash
# Install ttyd's upstream static release binary, pinned by version, after checking it against the SHA256SUMS
# file published with that release; nothing is installed when the download or the checksum fails.
#
# usage: fetch_ttyd.sh VERSION [DEST]      (DEST default /usr/local/bin/ttyd)
# env:   TTYD_RELEASES  release download root (default https://github.com/tsl0922/ttyd/releases/download)
#        TTYD_ARCH      asset suffix (default `uname -m`: x86_64, aarch64, ...)
set -euo pipefail
version="${1:?usage: fetch_ttyd.sh VERSION [DEST]}"
dest="${2:-/usr/local/bin/ttyd}"
releases="${TTYD_RELEASES:-https://github.com/tsl0922/ttyd/releases/download}"
asset="ttyd.${TTYD_ARCH:-$(uname -m)}"
url="$releases/$version"

die() { printf 'fetch_ttyd.sh: error: %s\n' "$*" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/SHA256SUMS" "$url/SHA256SUMS" \
  || die "could not download $url/SHA256SUMS; offline? build with --build-arg TTYD_VERSION= to leave ttyd out."
curl -fsSL --retry 3 -o "$tmp/$asset" "$url/$asset" \
  || die "could not download $url/$asset (no ttyd $version build for this architecture?)."
line=$(grep -E "^[0-9a-f]{64} [ *]${asset//./\\.}\$" "$tmp/SHA256SUMS" || true)
[ -n "$line" ] || die "SHA256SUMS of ttyd $version lists no checksum for $asset."
(cd "$tmp" && printf '%s\n' "$line" | sha256sum --check --strict --quiet -) \
  || die "$asset does not match its checksum in SHA256SUMS of ttyd $version; not installing it."
install -D -m 0755 "$tmp/$asset" "$dest"
echo "installed ttyd $version ($asset, sha256 ${line%% *}) at $dest"
