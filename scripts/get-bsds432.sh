#!/usr/bin/env bash
# The colour denoisers' training set, "CBSD432": the 500 photographs of the Berkeley Segmentation Data Set 500
# (Arbelaez et al., TPAMI 2011; distributed by its authors for research and education, mirrored in
# github.com/BIDS/BSDS500) minus the 68 of the CBSD68 test set, which must never be trained on.
#
# Usage: scripts/get-bsds432.sh SRC [DEST]
#   SRC   a BSDS500 copy: any folder holding its JPEGs, searched recursively (e.g. a clone of
#         github.com/BIDS/BSDS500, whose images are in BSDS500/data/images/{train,val,test})
#   DEST  the training folder (default .data/bsds432: what the noise recipe's data `builtin+...+.data/bsds432`
#         reads)
# The CBSD68 images are left out by name, and a DEST holding one of them is refused. Files already in DEST are
# kept; the script ends by counting the photographs (432 expected).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/get-bsds432.sh SRC [DEST]; SRC: a copy of BSDS500 (github.com/BIDS/BSDS500)" >&2; exit 2; }
src=$1
dest=${2:-.data/bsds432}
[ -d "$src" ] || { echo "get-bsds432.sh: $src: no such folder (a copy of BSDS500)" >&2; exit 2; }
# The 68 image IDs of CBSD68 (the BSDS300 test set), as the FFDNet/IRCNN code distributes it.
CBSD68="101085 101087 102061 103070 105025 106024 108005 108070 108082 109053 119082 12084 123074 126007 130026
134035 14037 143090 145086 147091 148026 148089 157055 159008 160068 16077 163085 167062 167083 170057 175032
175043 182053 189080 19021 196073 197017 208001 210088 21077 216081 219090 220075 223061 227092 229036 236037
24077 241004 241048 253027 253055 260058 271035 285079 291000 295087 296007 296059 299086 300091 302008 304034
304074 306005 3096 33039 351093"
is_test() { case " $(echo $CBSD68) " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
mkdir -p "$dest"
for f in "$dest"/*; do
  [ -e "$f" ] || continue
  id=$(basename "$f"); id=${id%.*}
  if is_test "$id"; then echo "get-bsds432.sh: $f is a CBSD68 test image; remove it before training" >&2; exit 1; fi
done
copied=0
while IFS= read -r -d '' f; do
  id=$(basename "$f" .jpg)
  [[ $id =~ ^[0-9]+$ ]] || continue
  is_test "$id" && continue
  [ -e "$dest/$id.jpg" ] && continue
  cp "$f" "$dest/$id.jpg.part" && mv "$dest/$id.jpg.part" "$dest/$id.jpg"
  copied=$((copied + 1))
done < <(find "$src" -type f -name '*.jpg' -print0)
count=$(find "$dest" -maxdepth 1 -name '*.jpg' | wc -l)
echo "$dest: $count photographs ($copied copied); 432 expected"
[ "$count" -eq 432 ] || echo "get-bsds432.sh: expected 432, found $count: is $src all of BSDS500?" >&2
