#!/usr/bin/env bash
#! Fetches the emoji dataset Aura's default image model is trained and evaluated on: the npm
#! package emoji-datasource-google@16.0.0 (3,786 Noto emoji as 64×64 PNGs with their names,
#! Apache-2.0), as the tarball `npm pack` downloads, into
#! `${AURA_MODEL_CACHE:-$HOME/.cache/aura/models}/emoji/`. Idempotent: a tarball already
#! there with the expected SHA-256 is kept. aura-image reads the tarball as it is (no
#! unpacking) and checks the same digest again before using it.
set -euo pipefail

CACHE="${AURA_MODEL_CACHE:-$HOME/.cache/aura/models}"
PKG=emoji-datasource-google
VERSION=16.0.0
TGZ="$PKG-$VERSION.tgz"
SHA=fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438

mkdir -p "$CACHE/emoji"
dest="$CACHE/emoji/$TGZ"
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$dest" ] && [ "$(sha_of "$dest")" = "$SHA" ]; then
  echo "emoji: cached at $dest"
  exit 0
fi
echo "emoji: downloading $PKG@$VERSION" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$PKG@$VERSION" >/dev/null)
got=$(sha_of "$tmp/$TGZ")
if [ "$got" != "$SHA" ]; then
  echo "emoji: sha-256 mismatch (got $got, want $SHA)" >&2
  exit 1
fi
mv "$tmp/$TGZ" "$dest"
echo "emoji: saved to $dest"
