#!/bin/sh
# Fetch the image decoders the built-in viewer runs in the browser (WebAssembly, in a Web Worker) for
# `CLOUDFILM_CODECS_DIR`: JPEG baseline (libjpeg-turbo), JPEG lossless, JPEG-LS (CharLS),
# JPEG 2000 (OpenJPEG) and HTJ2K (OpenJPH). RLE needs no library (decoded in the worker itself).
#
#   scripts/fetch_codecs.sh [DEST]    -> prints the directory to use
#
# DEST defaults to ${XDG_CACHE_HOME:-~/.cache}/cloudfilm/codecs-$CODECS_SET; a complete earlier
# download is reused. Needs `npm` (Debian package `npm`) and the npm registry; nothing is built and
# no package script runs (`npm pack` only downloads the published tarballs).
set -eu

SET="${CODECS_SET:-1}"
DEST="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/cloudfilm/codecs-$SET}"
# Pinned packages (bump CODECS_SET with them) and the files of each the viewer serves.
PACKAGES="@cornerstonejs/codec-libjpeg-turbo-8bit@1.2.8 jpeg-lossless-decoder-js@2.1.2 \
@cornerstonejs/codec-charls@1.2.7 @cornerstonejs/codec-openjpeg@1.3.6 @cornerstonejs/codec-openjph@2.4.11"
FILES="dist/libjpegturbowasm_decode.js dist/libjpegturbowasm_decode.wasm release/lossless.js \
dist/charlswasm_decode.js dist/charlswasm_decode.wasm dist/openjpegwasm_decode.js dist/openjpegwasm_decode.wasm \
dist/openjphjs.js dist/openjphjs.wasm"

if [ -f "$DEST/dist/VERSIONS" ] && [ "$(cat "$DEST/dist/VERSIONS")" = "$PACKAGES" ]; then
    echo "$DEST/dist"
    exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "fetch_codecs: npm is not installed (apt-get install npm)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM
# shellcheck disable=SC2086
(cd "$work" && npm pack --silent $PACKAGES >/dev/null)
mkdir -p "$work/dist/licenses"
for tgz in "$work"/*.tgz; do
    name="$(basename "$tgz" .tgz)"
    mkdir "$work/$name"
    tar -xzf "$tgz" -C "$work/$name"
    for f in $FILES; do
        [ -f "$work/$name/package/$f" ] && cp "$work/$name/package/$f" "$work/dist/"
    done
    for lic in "$work/$name"/package/LICENSE*; do
        [ -f "$lic" ] && cp "$lic" "$work/dist/licenses/$name.LICENSE.txt"
    done
done
for f in $FILES; do
    [ -f "$work/dist/$(basename "$f")" ] || { echo "fetch_codecs: $(basename "$f") is missing from the packages" >&2; exit 1; }
done
echo "$PACKAGES" > "$work/dist/VERSIONS"
mkdir -p "$DEST"
rm -rf "$DEST/dist"
mv "$work/dist" "$DEST/dist"
echo "$DEST/dist"
