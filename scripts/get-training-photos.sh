#!/usr/bin/env bash
# Training photographs for the built-in weights, and held-out photographs for reporting generalisation:
# the photographic wallpapers (no renders, illustrations or abstract art) of four Debian packages, each file
# pinned in the list below by package, version, path inside the package, licence, original size and sha256.
# docs/damage-and-data.md ("Training photographs") has the licence table and how to score the held-out set.
# Debian's opencv-doc images are never used here: they are kept for independent evaluation.
#
# Usage: scripts/get-training-photos.sh [--originals] [--max-side N] [--list] [DEST [HELDOUT]]
#   DEST          training photographs, one folder per package (default .data/photos: what
#                 `--data builtin+.data/photos` trains on)
#   HELDOUT       held-out photographs, never trained on (default .data/photos-heldout); not inside DEST
#   --max-side N  an original longer than N px is shrunk to N px on its long side (Lanczos, saved as lossless
#                 PNG, upright per its EXIF orientation) so that training reads it fast; default 1600. The
#                 checksum is always that of the original file.
#   --originals   keep every file exactly as it is in its package
#   --list        print the file list and exit (no network)
# Files already present are skipped, so a second run downloads nothing. A file whose checksum does not match,
# or that its package lacks, stops the script with one line naming it.
set -euo pipefail

# Columns: split folder name package version path licence size sha256 author.
# split: train (DEST/folder/name) or heldout (HELDOUT/folder/name): every 5th of the plasma and lomiri
# photographs sorted by folder/name. licence: the file's entry in /usr/share/doc/PACKAGE/copyright, except for
# plasma, whose per-wallpaper metadata.desktop says LGPL-3.0 (the package's copyright file says GPL-2+ for
# every file). size: the original's width x height. author: as the copyright file or metadata credits them.
photo_list() {
  cat <<'EOF'
train   mate-nature Aqua                               mate-backgrounds            1.26.0-1   usr/share/backgrounds/mate/nature/Aqua.jpg                      GPL-2+       2560x1600 5c30118205982da441bf7e6a1ada636a8a0be879408140b3148280c665ed6bce Charles Barbin
train   mate-nature Blinds                             mate-backgrounds            1.26.0-1   usr/share/backgrounds/mate/nature/Blinds.jpg                    GPL-2+       1920x1200 f7aac0dcc2e06d0491643e84df3da1d9db7c4610f58806a880d56e074799f600 Lennart Poettering, Andrea Cimitan
train   mate-nature Dune                               mate-backgrounds            1.26.0-1   usr/share/backgrounds/mate/nature/Dune.jpg                      GPL-2+       1680x1050 8a67c2cb0be8c46b70c237311a4fa4d2b4ac7d39568135384787801fa5cc9a91 Marco Cogoni, Hylke Bons
train   mate-nature FreshFlower                        mate-backgrounds            1.26.0-1   usr/share/backgrounds/mate/nature/FreshFlower.jpg               GPL-2+       1600x1203 972b0a0c4e5e3fa93f4f244fc84bc64b121a5eac3aaa5856f1308c1f38a02f8e Jens Ansorg
train   mate-nature Garden                             mate-backgrounds            1.26.0-1   usr/share/backgrounds/mate/nature/Garden.jpg                    GPL-2+       2560x1600 d3095ee09d425ef23d27155412136cf14fc3c9af76ca58b452f55e23da324e78 Charles Barbin
train   mate-nature GreenMeadow                        mate-backgrounds            1.26.0-1   usr/share/backgrounds/mate/nature/GreenMeadow.jpg               GPL-2+       1280x1024 8fa0de0aa4089f7319c9fb7a6d006d4cab6023e8c8853731557cff53567b4832 Timothy Schellhase, Lapo Calamandrei
train   mate-nature LadyBird                           mate-backgrounds            1.26.0-1   usr/share/backgrounds/mate/nature/LadyBird.jpg                  GPL-2+       2560x1600 e35a9a4126ef969c90b29c038058c5a575a20eadd84106a37bf1fa9931e7b61d Charles Barbin
train   mate-nature RainDrops                          mate-backgrounds            1.26.0-1   usr/share/backgrounds/mate/nature/RainDrops.jpg                 GPL-2+       1920x1200 3e4ea9671c28c90a86cf67b3db9daf18c4741587c596333a7529ca589aaa0c16 "blackcombwhistler07"
train   mate-nature Storm                              mate-backgrounds            1.26.0-1   usr/share/backgrounds/mate/nature/Storm.jpg                     GPL-2+       1920x1280 77ca53077831d3237f73393a91fc879158abc046d852941c26e90de336356957 Sergey Nazarov
train   mate-nature TwoWings                           mate-backgrounds            1.26.0-1   usr/share/backgrounds/mate/nature/TwoWings.jpg                  GPL-2+       2560x1600 665e5abf8a5399070a91a9a8e455fe071e5b61697ff78fdeda4e9843ef545aeb Charles Barbin, Hylke Bons
train   mate-nature Wood                               mate-backgrounds            1.26.0-1   usr/share/backgrounds/mate/nature/Wood.jpg                      GPL-2+       2560x1920 19c78500ac00a622e19907ab9cc7d06d46fe08c4a6142759a84195696150ec07 Jean-François Fortin Tam
train   mate-nature YellowFlower                       mate-backgrounds            1.26.0-1   usr/share/backgrounds/mate/nature/YellowFlower.jpg              GPL-2+       2560x1600 254da96256acb7add685679775a04d1e4a5bc8cd13e5a5a3d61351ce198a5306 Charles Barbin
train   plasma      BytheWater                         plasma-workspace-wallpapers 4:5.27.5-2 usr/share/wallpapers/BytheWater/contents/images/2560x1600.jpg   LGPL-3.0     2560x1600 c272434ef39f2abf1ed48a15a8910088020f3165329a5092f3940ec9464bc05f Maciej Wiklo
train   plasma      ColdRipple                         plasma-workspace-wallpapers 4:5.27.5-2 usr/share/wallpapers/ColdRipple/contents/images/2560x1600.jpg   LGPL-3.0     2560x1600 05bef6722fc0ed81292cceb3ed026c38d17e510f3c84be7d68610c2b1a723c3f Risto Saukonpää
train   plasma      ColorfulCups                       plasma-workspace-wallpapers 4:5.27.5-2 usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg LGPL-3.0     2560x1600 6e0f3a72feb5a4a9fec191b77e34874c3c69e2d93040deb3f07773e73385023d Dmitri Popov
train   plasma      DarkestHour                        plasma-workspace-wallpapers 4:5.27.5-2 usr/share/wallpapers/DarkestHour/contents/images/2560x1600.jpg  LGPL-3.0     2560x1600 8e3703fae3a3c217b1fc2b399b706cd3720584268d071ba153e4809daa55f1ce Risto Saukonpää
heldout plasma      EveningGlow                        plasma-workspace-wallpapers 4:5.27.5-2 usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg  LGPL-3.0     2560x1600 586682dcb362b9f620068f10138f87d0d3649939aef238adc5807cb951976a7a Ian Hex
train   plasma      FallenLeaf                         plasma-workspace-wallpapers 4:5.27.5-2 usr/share/wallpapers/FallenLeaf/contents/images/2560x1600.jpg   LGPL-3.0     2560x1600 95603a6560c7e8d50e0e03b3f4adbe39c5258c72528e74e4ecaea1daf4e499de Martin Klapetek
train   plasma      Grey                               plasma-workspace-wallpapers 4:5.27.5-2 usr/share/wallpapers/Grey/contents/images/2560x1600.jpg         LGPL-3.0     2560x1600 88c31d8944b7e6935d1b9a296654c692f0772cb512491713eb30a972a604c0ed Sigi Sagi
train   plasma      Kite                               plasma-workspace-wallpapers 4:5.27.5-2 usr/share/wallpapers/Kite/contents/images/2560x1600.jpg         LGPL-3.0     2560x1600 bdca288ce296a981e80659c021cf707caddc702c0c8d4247e60bd618476d47f8 Risto Saukonpää
train   plasma      OneStandsOut                       plasma-workspace-wallpapers 4:5.27.5-2 usr/share/wallpapers/OneStandsOut/contents/images/2560x1600.jpg LGPL-3.0     2560x1600 cb507baf1dafdcae362264f3aba9483ed4be5f6c9fdd770f0ec0920c6d9e80fd Risto Saukonpää
heldout plasma      Path                               plasma-workspace-wallpapers 4:5.27.5-2 usr/share/wallpapers/Path/contents/images/2560x1600.jpg         LGPL-3.0     2560x1600 7477457d7f17b736259f1b021864778ad4ba802cf3214e6728181ff29126bba8 Risto Saukonpää
train   plasma      summer_1am                         plasma-workspace-wallpapers 4:5.27.5-2 usr/share/wallpapers/summer_1am/contents/images/2560x1600.jpg   LGPL-3.0     2560x1600 c868b50789591dd42910153c768053f1ba0a98cb36bbfc2b7a96a1045d0477f8 Risto Saukonpää
train   lomiri      Bridge_by_Sander_Klootwijk         lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg            CC-BY-SA-4.0 4352x2448 bd86b081f9975e2b83527f71e49b9271a8ab40885428395969d9f7d834d7f050 Sander Klootwijk
train   lomiri      Dragonfly_by_Bolly                 lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/Dragonfly_by_Bolly.jpg                    CC-BY-SA-4.0 4224x3168 af5af17841009732def24b09bb1e669a1b09d2b4bdeee7812c371101c30d2bb3 "Bolly"
train   lomiri      Picture_0B_by_freespace            lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/Picture_0B_by_freespace.jpg               CC-BY-4.0    2572x1740 c8c0ab18e48d9e0419fe42881112137f3afafc27dfddc29ec3a6d54c56d225ad Trevor "Freespace"
heldout lomiri      Picture_1A_by_freespace            lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/Picture_1A_by_freespace.jpg               CC-BY-4.0    1365x1074 89e86af38d04daaef975665dc2127e9fa76f0fd68f4eea105a2d0ae3390b010b Trevor "Freespace"
train   lomiri      Wine_by_Jakkub_Mede                lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg                   CC-BY-4.0    2560x3837 d2e96e6d4da40dd804b3d0ce295e94de04a2d7d9b6785d42cd9d92ba58bced74 Jakub Mede
train   lomiri      aitzgorri_by_Aitzol_Berasategi     lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg        CC-BY-4.0    3088x2056 66268e7b48f8854d36a28765fac6e23ec1aee251daa6da1f64715f201020ad36 Aitzol Berasategi
train   lomiri      analogpattern_by_Peter_Nerlich     lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/analogpattern_by_Peter_Nerlich.jpg        CC-BY-SA-4.0 2880x2160 15372488a192b2be2eafc67bd3ed31cbfca19abe3929e925607fcbc9cb4d4202 Peter Nerlich
train   lomiri      free_by_Peter_Nerlich              lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/free_by_Peter_Nerlich.jpg                 CC-BY-SA-4.0 2880x2160 85a5453c2fed514c75973016f3d862aca62eb7ca087618822469274ac1092373 Peter Nerlich
heldout lomiri      friends_by_Aitzol_Berasategi       lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg          CC-BY-4.0    2056x3088 cc40e313c74e421edffe3403def413c16878ce14661cce7ec5915baeab35538d Aitzol Berasategi
train   lomiri      greentock_by_Peter_Nerlich         lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/greentock_by_Peter_Nerlich.jpg            CC-BY-SA-4.0 2880x2160 e7b20e2db9dcd6e2b278ca55873c2110b35d89cd38b04d0b18728726888e6889 Peter Nerlich
train   lomiri      life_by_Aitzol_Berasategi          lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg             CC-BY-4.0    3088x2056 4c119350ead80201fe256850c3d316309ddfb4bdf10b235ce982dcde0c667c05 Aitzol Berasategi
train   lomiri      picosdeeuropa_by_Aitzol_Berasategi lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg    CC-BY-4.0    3264x2448 414d0072b2f6f2c555deafeaef6e45c4fed6fa9ad26eba6560ca8803959cf97a Aitzol Berasategi
train   lomiri      seeding_by_Clements_Engelhardt     lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg        CC0-1.0      5312x2988 a5634d1ab5e41a3568e92d4a894a500c92b891f9ff734e50bd224d6e185a605f Clemens Engelhardt
heldout lomiri      sunset_by_Aitzol_Berasategi        lomiri-wallpapers-16.04     20.04.0-2  usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg           CC-BY-4.0    4272x2848 474dab6a4b9f94dc76c29dfe30e9f5db4af0fd2e33fe5d695f8152b371efca18 Aitzol Berasategi
train   lomiri      Kleiber_by_Lukas_Baubkus           lomiri-wallpapers-20.04     20.04.0-2  usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg              CC-BY-SA-3.0 6028x3391 6572410c09f4492c74ccadde133565a14c0161617d5917d4c820c66d65a44ba7 Lukas Baubkus
EOF
}

die() { echo "get-training-photos.sh: $*" >&2; exit 1; }

dest=.data/photos heldout=.data/photos-heldout max_side=1600 originals=0 positional=()
while [ $# -gt 0 ]; do
  case $1 in
    --list) photo_list; exit 0 ;;
    --originals) originals=1 ;;
    --max-side)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--max-side needs a whole number of pixels, got '${2:-}'"
      max_side=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) positional+=("$1") ;;
  esac
  shift
done
[ ${#positional[@]} -le 2 ] || die "too many arguments: ${positional[*]} (see --help)"
dest=${positional[0]:-$dest}
heldout=${positional[1]:-$heldout}
# Training reads DEST recursively: the held-out photographs must live outside it (and the other way round).
d=$(realpath -m "$dest") h=$(realpath -m "$heldout")
case "$h/" in "$d/"*) die "$heldout: the held-out folder must not lie inside the training folder $dest" ;; esac
case "$d/" in "$h/"*) die "$dest: the training folder must not lie inside the held-out folder $heldout" ;; esac

# Where an entry goes: its split's folder, its name, and .png when it is shrunk, else the original's suffix.
target() {  # split folder name path size
  local root=$dest ext=${4##*.} w=${5%x*} h=${5#*x}
  [ "$1" = heldout ] && root=$heldout
  ext=${ext,,}
  if [ "$originals" = 0 ] && { [ "$w" -gt "$max_side" ] || [ "$h" -gt "$max_side" ]; }; then ext=png; fi
  echo "$root/$2/$3.$ext"
}

# First pass, offline: drop stale copies (the other split's folder, the other form), list what is missing.
missing=()
while read -r split folder name pkg ver path lic size sha author; do
  [ -n "$split" ] || continue
  out=$(target "$split" "$folder" "$name" "$path" "$size")
  for old in "$dest/$folder/$name".* "$heldout/$folder/$name".*; do
    if [ -e "$old" ] && [ "$old" != "$out" ]; then rm -f -- "$old"; fi
  done
  [ -f "$out" ] || missing+=("$split $folder $name $pkg $ver $path $lic $size $sha")
done < <(photo_list)

if [ ${#missing[@]} -gt 0 ]; then
  py=
  for candidate in "${PYTHON:-}" "$(dirname "$0")/../.venv/bin/python" python3; do
    if [ -n "$candidate" ] && "$candidate" -c 'import PIL' 2>/dev/null; then py=$candidate; break; fi
  done
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  declare -A fetched=()
  for entry in "${missing[@]}"; do
    read -r split folder name pkg ver path lic size sha <<<"$entry"
    if [ -z "${fetched[$pkg]:-}" ]; then
      # The version seen when the list was made; a newer Debian may only have another one, whose files
      # the checksums then judge.
      if ! (cd "$work" && apt-get download "$pkg=$ver" >/dev/null 2>"$work/apt.err"); then
        echo "get-training-photos.sh: $pkg=$ver is not available from apt; trying its current version" >&2
        (cd "$work" && apt-get download "$pkg" >/dev/null 2>"$work/apt.err") \
          || die "apt-get download $pkg failed: $(tail -n 1 "$work/apt.err")"
      fi
      dpkg -x "$work/${pkg}"_*.deb "$work/$pkg"
      mkdir -p "$(dirname "$dest")"
      cp "$work/$pkg/usr/share/doc/$pkg/copyright" "$(dirname "$dest")/$pkg.COPYRIGHT"
      fetched[$pkg]=1
    fi
    src=$work/$pkg/$path
    [ -f "$src" ] || die "$path: not in $(basename "$work/${pkg}"_*.deb)"
    got=$(sha256sum "$src" | cut -d' ' -f1)
    [ "$got" = "$sha" ] || die "$path ($(basename "$work/${pkg}"_*.deb)): sha256 $got, expected $sha"
    out=$(target "$split" "$folder" "$name" "$path" "$size")
    tmp=$(dirname "$out")/.$name.tmp  # hidden: the data loader ignores a half-written file
    mkdir -p "$(dirname "$out")"
    if [ "${out##*.}" = png ] && [ "${path##*.}" != png ]; then
      [ -n "$py" ] || die "$path: shrinking needs Python with Pillow (set PYTHON=...), or pass --originals"
      "$py" - "$src" "$tmp" "$max_side" <<'PY'
import sys

from PIL import Image, ImageOps

src, dst, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Image.open(src) as im:
    icc = im.info.get("icc_profile")
    im = ImageOps.exif_transpose(im)
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    scale = side / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    im.resize(size, Image.Resampling.LANCZOS).save(dst, "PNG", icc_profile=icc)
PY
    else
      cp "$src" "$tmp"
    fi
    mv -f "$tmp" "$out"
  done
fi

for root in "$dest" "$heldout"; do
  for folder in "$root"/*/; do
    [ -d "$folder" ] || continue
    echo "$(find "$folder" -maxdepth 1 -type f ! -name '.*' | wc -l) photographs in ${folder%/} ($(du -sh "$folder" | cut -f1))"
  done
done
