#!/usr/bin/env bash
# The wheel carries what the docs tell users to run. Build it, install it with --no-deps into a fresh venv
# whose dependencies come from the package index (torch: the CPU wheel first, as the Makefile does), and
# run from outside the source tree: `pyramidal weights`, `restore --weights builtin`, `train --config
# quick`, and the one-call Python API.
# Usage: scripts/check-wheel.sh        (PYTHON=python3, TORCH=torch==2.13.0 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS
# pip notes every package missing from this machine's local extra indexes; those lines are noise here.
quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

quiet "$PYTHON" -m pip wheel --quiet --no-deps -w "$work/dist" .
wheel=$(ls "$work"/dist/pyramidal-*.whl)
echo "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) kB)"

# What the docs send users to must be inside: presets, built-in weights, the typing marker.
"$PYTHON" - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = ["pyramidal/py.typed", "pyramidal/configs/quick.toml", "pyramidal/configs/noise.toml",
        "pyramidal/recipes/noise.toml", "pyramidal/weights/noise.safetensors"]
missing = [n for n in need if n not in names]
assert not missing, f"the wheel lacks {missing}"
meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
text = zipfile.ZipFile(sys.argv[1]).read(meta).decode()
assert "License-Expression: MIT" in text, "licence metadata is not the SPDX expression MIT"
assert "Requires-Dist: torch>=" in text and "scipy" not in text, "dependencies"
print("wheel holds the presets, the built-in weights and py.typed; License-Expression: MIT")
PY

"$PYTHON" -m venv "$work/venv"
py="$work/venv/bin/python"
quiet "$py" -m pip install --quiet "$TORCH"
# The wheel's own requirements (extras left out), from the index; then the wheel itself with --no-deps.
mapfile -t deps < <("$py" - "$wheel" <<'PY'
import sys, zipfile
from email.parser import Parser
zf = zipfile.ZipFile(sys.argv[1])
meta = Parser().parsestr(zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode())
for req in meta.get_all("Requires-Dist") or []:
    if "extra ==" not in req:
        print(req)
PY
)
quiet "$py" -m pip install --quiet "${deps[@]}"
quiet "$py" -m pip install --quiet --no-deps "$wheel"
echo "installed into a fresh venv in $((SECONDS - start)) s"

# Run from an empty folder, so nothing can come from the source tree.
mkdir "$work/run"
cd "$work/run"
bin="$work/venv/bin"
"$py" -c "import pyramidal, sys; assert '$work/venv' in pyramidal.__file__, pyramidal.__file__"
"$bin/pyramidal" weights | tail -3
"$bin/pyramidal" weights noise | grep -i "licence"
"$py" -c "
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save('photo.png')
"
"$bin/pyramidal" restore --task noise --weights builtin photo.png -o restored --device cpu
test -s restored/photo.png
"$bin/pyramidal" train --config quick --steps 2 --size 32 --batch-size 2 --val-images 2 --out runs \
    --device cpu --no-progress
ls runs/*/*/*/best.safetensors >/dev/null
"$py" -c "
import numpy as np, pyramidal
from PIL import Image
out = pyramidal.restore(Image.open('photo.png'), task='noise', device='cpu')
assert out.size == (64, 48) and out.mode == 'RGB', (out.size, out.mode)
model = pyramidal.create_model('pyramidal23456.noise', pretrained=True)
assert model.info['task'] == 'noise' and 'license' in model.info
print('Python API: restore and create_model(pretrained=True) work from the wheel')
"
echo "check-wheel: the installed wheel restores with built-in weights and trains with --config quick" \
     "($((SECONDS - start)) s in all)"
