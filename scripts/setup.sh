#!/usr/bin/env bash
# One-shot set-up on a fresh Debian machine: system packages (when root), a virtual
# environment, the CPU build of torch first (so nothing pulls a CUDA build), then the package.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev,enhance,bench}

# Debian packages the offline benchmark draws its real audio and voices from.
# Soundfonts: one is drawn per music clip; csound-soundfont is held out for test_heldout.
APT_PACKAGES="asterisk-core-sounds-en-wav asterisk-core-sounds-en asterisk-moh-opsound-wav \
  flite espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fluidsynth \
  timgm6mb-soundfont fluid-soundfont-gm musescore-general-soundfont-small opl3-soundfont csound-soundfont \
  sound-theme-freedesktop"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install:$missing"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "[setup] not root: cannot install$missing. The benchmark builder will use the sources that are present." >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip >/dev/null
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e ".[${EXTRAS}]"
echo "[setup] done: $("$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
