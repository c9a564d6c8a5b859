#!/bin/sh
# Fetch ONNX Runtime's C/C++ API headers (ORT API 29) into a cache outside the repository
# and print the include directory. The PyPI onnxruntime wheel ships no headers; the npm
# package com.github.asus4.onnxruntime@0.4.9 carries the official ones. The tarball's
# sha256 is checked before anything is extracted. Never commit these headers.
#
#   usage: fetch_ort_headers.sh [CACHE_DIR]      (default ${XDG_CACHE_HOME:-~/.cache}/waveopt)
set -eu

PACKAGE="com.github.asus4.onnxruntime"
VERSION="0.4.9"
SHA256="e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d"
INNER="package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers"

CACHE="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/waveopt}"
DEST="$CACHE/ort-headers-$VERSION"

if [ -f "$DEST/onnxruntime_c_api.h" ] && [ -f "$DEST/.complete" ]; then
    echo "$DEST"
    exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "fetch_ort_headers: npm not found; install node/npm or set ORT_INCLUDE_DIR" >&2; exit 1; }
mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

(cd "$WORK" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null) || {
    echo "fetch_ort_headers: 'npm pack $PACKAGE@$VERSION' failed" >&2; exit 1; }
TARBALL="$WORK/$PACKAGE-$VERSION.tgz"
GOT=$(sha256sum "$TARBALL" | cut -d' ' -f1)
if [ "$GOT" != "$SHA256" ]; then
    echo "fetch_ort_headers: sha256 mismatch for $PACKAGE@$VERSION: got $GOT, want $SHA256" >&2
    exit 1
fi
tar -xzf "$TARBALL" -C "$WORK" "$INNER"
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
cp "$WORK/$INNER"/*.h "$DEST.tmp/"
grep -q 'define ORT_API_VERSION 29' "$DEST.tmp/onnxruntime_c_api.h" || {
    echo "fetch_ort_headers: unexpected header version in $PACKAGE@$VERSION" >&2; exit 1; }
touch "$DEST.tmp/.complete"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "$DEST"
