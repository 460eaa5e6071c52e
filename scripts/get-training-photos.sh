#!/usr/bin/env bash
# Extra training photographs for the built-in weights: the 12 nature photos of Debian's
# mate-backgrounds package (GPL-2+, see /usr/share/doc/mate-backgrounds/copyright inside the package).
# They only ever join the *training* split; the built-in validation photos stay untouched.
# Usage: scripts/get-training-photos.sh [DEST]   (default .data/photos)
set -euo pipefail
dest=${1:-.data/photos}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download mate-backgrounds >/dev/null 2>&1)
dpkg -x "$work"/mate-backgrounds_*.deb "$work/x"
mkdir -p "$dest/mate-nature"
cp "$work"/x/usr/share/backgrounds/mate/nature/*.jpg "$dest/mate-nature/"
cp "$work"/x/usr/share/doc/mate-backgrounds/copyright "$(dirname "$dest")/mate-backgrounds.COPYRIGHT"
ls "$dest/mate-nature" | wc -l | xargs echo "photos in $dest/mate-nature:"
