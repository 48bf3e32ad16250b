#!/bin/sh
# Fetch the built OHIF viewer (npm package @ohif/app, its dist/) for `CLOUDFILM_OHIF_DIR`.
#
#   scripts/fetch_ohif.sh [DEST]      -> prints the dist directory to use
#
# DEST defaults to ${XDG_CACHE_HOME:-~/.cache}/cloudfilm/ohif-$OHIF_VERSION; a complete earlier
# download is reused. Needs `npm` (Debian package `npm`) and the npm registry; nothing is built.
set -eu

VERSION="${OHIF_VERSION:-3.13.2}"
DEST="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/cloudfilm/ohif-$VERSION}"

if [ -f "$DEST/dist/index.html" ] && [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ]; then
    echo "$DEST/dist"
    exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "fetch_ohif: npm is not installed (apt-get install npm)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM
(cd "$work" && npm pack --silent "@ohif/app@$VERSION" >/dev/null)
tar -xzf "$work"/ohif-app-*.tgz -C "$work"
[ -f "$work/package/dist/index.html" ] || { echo "fetch_ohif: @ohif/app@$VERSION has no dist/index.html" >&2; exit 1; }
mkdir -p "$DEST"
rm -rf "$DEST/dist"
mv "$work/package/dist" "$DEST/dist"
echo "$VERSION" > "$DEST/VERSION"
echo "$DEST/dist"
