#!/usr/bin/env bash
# Run part of the pytest suite on the Raspberry Pi 4's software stack, emulated on an x86-64 machine:
# Debian bookworm's arm64 Python 3.11 (what 64-bit Raspberry Pi OS Bookworm ships) and the aarch64
# wheels pip picks for it (numpy < 2, opencv-python-headless < 4.11), run by qemu-aarch64 user-mode
# emulation as a Cortex-A72. No debootstrap: the arm64 .debs are unpacked into a sysroot that qemu
# uses as its library prefix, and the wheels are installed for aarch64 by the host's pip.
#
#   bash .ci/aarch64.sh [pytest args...]     default: tests/test_model.py tests/test_model_inputs.py tests/test_pipeline.py -q
#
# Environment:
#   EDGEDETECT_ARM64_CACHE    cache of the sysroot and wheels (default /var/cache/edgedetect-arm64)
#   EDGEDETECT_ARM64_REFRESH  1: rebuild the sysroot and re-resolve the wheels
#   EDGEDETECT_ARM64_TIMEOUT  seconds allowed to the emulated pytest run (default 600)
#   QEMU_CPU                  emulated CPU (default cortex-a72, the Pi 4's core)
#
# Needs root (apt-get; a private mount namespace for the fake /proc/cpuinfo). Figures printed here
# are emulated (qemu runs aarch64 code tens of times slower): they are no measure of a Pi.
set -euo pipefail

say() { printf 'aarch64: %s\n' "$*"; }
fail() {
    printf 'aarch64: FAILED: %s\n' "$*" >&2
    exit 1
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EDGEDETECT_ARM64_CACHE:-/var/cache/edgedetect-arm64}
SYSROOT=$CACHE/sysroot
SITE=$CACHE/site
PY=$CACHE/bin/python3
FAKE_CPUINFO=$ROOT/.ci/fake-pi4-cpuinfo
SSD_MODEL=$ROOT/../shared/models/ssd_mobilenet_v2_coco_quant_postprocess.tflite
export QEMU_CPU=${QEMU_CPU:-cortex-a72}

# Debian arm64 packages: bookworm's Python 3.11 and its shared libraries (apt resolves the closure;
# libstdc++6 and libgcc-s1 are what the manylinux wheels need beyond it).
DEBS=(python3.11 libpython3.11-stdlib libstdc++6 libgcc-s1 zlib1g)
# The Pi's pins for Python 3.11 (pyproject.toml): numpy 1.x, and opencv-python-headless < 4.11,
# the last built against numpy 1.
REQS=('ai-edge-litert>=1.2' 'numpy>=1.24,<2' 'opencv-python-headless>=4.8,<4.11' 'psutil>=5.9'
    'paho-mqtt>=2.0,<3' 'prometheus-client>=0.17'
    'pytest>=8' 'pytest-timeout>=2.3' tomli)
# pip takes each --platform literally (no manylinux_2_X implies the lower ones), and ai-edge-litert 2.x
# ships only manylinux_2_27_aarch64 wheels: without that tag pip quietly falls back to 1.4.0.
# Bookworm's glibc is 2.36, so every tag up to manylinux_2_36 is installable there.
PLATFORMS=(--platform manylinux2014_aarch64)
for m in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${m}_aarch64"); done

# What runs inside the emulated Python before pytest: the figures to quote, and a check that the
# runtime loads and runs the real SSD model at all.
PROBE=$(cat <<'EOF'
import importlib.metadata as md, platform, statistics, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter

model = sys.argv[1]
cpuinfo = open("/proc/cpuinfo").read()
hw = [l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("Model")]
print(f"aarch64: platform.machine() = {platform.machine()}")
print(f"aarch64: python {platform.python_version()} ({sys.executable} -> Debian bookworm arm64 python3.11)")
print("aarch64: numpy {} | opencv-python-headless {} | ai-edge-litert {} | psutil {}".format(
    np.__version__, md.version("opencv-python-headless"), md.version("ai-edge-litert"), md.version("psutil")))
print(f"aarch64: /proc/cpuinfo: {hw[0] if hw else 'NOT the fake Pi 4 one'}, "
      f"{cpuinfo.count('processor')} processors")
if platform.machine() != "aarch64" or not hw:
    sys.exit("aarch64: probe: not an emulated aarch64 Pi 4")
it = Interpreter(model_path=model, num_threads=4)
it.allocate_tensors()
inp = it.get_input_details()[0]
it.set_tensor(inp["index"], np.zeros((1, 300, 300, 3), np.uint8))
it.invoke()  # warm-up
ms = []
for _ in range(3):
    t = time.perf_counter()
    it.invoke()
    ms.append((time.perf_counter() - t) * 1000)
shapes = sorted(tuple(int(x) for x in d["shape"]) for d in it.get_output_details())
print(f"aarch64: ssd_mobilenet_v2_coco_quant_postprocess invoke median {statistics.median(ms):.0f} ms "
      f"over {len(ms)} runs (num_threads=4, emulated {platform.machine()}, not a Pi figure); "
      f"outputs {shapes}")
if tuple(inp["shape"]) != (1, 300, 300, 3) or shapes != [(1,), (1, 20), (1, 20), (1, 20, 4)]:
    sys.exit("aarch64: probe: unexpected SSD tensor shapes")
EOF
)

# Runs the probe and pytest under emulation. Called directly, or in a private mount namespace where
# the fake cpuinfo is bind-mounted over /proc/cpuinfo (see below).
emulated_run() {
    local rc=0
    "$PY" -c "$PROBE" "$SSD_MODEL" || rc=$?
    if ((rc != 0)); then
        if ((rc > 128)); then
            fail "the emulated probe was killed by signal $((rc - 128)) (a crash in ai-edge-litert is what a host, non-ARM /proc/cpuinfo causes)"
        fi
        fail "the emulated probe exited $rc"
    fi
    say "pytest $*"
    cd "$ROOT"
    timeout --kill-after=10 "${EDGEDETECT_ARM64_TIMEOUT:-600}" "$PY" -m pytest "$@" || rc=$?
    case $rc in
    0) ;;
    5) fail "pytest collected no test (exit 5)" ;;
    124 | 137) fail "pytest did not finish within ${EDGEDETECT_ARM64_TIMEOUT:-600} s" ;;
    *) fail "pytest exited $rc" ;;
    esac
}

if [[ ${1-} == --in-namespace ]]; then
    shift
    mount --bind "$FAKE_CPUINFO" /proc/cpuinfo || fail "cannot bind-mount $FAKE_CPUINFO over /proc/cpuinfo"
    emulated_run "$@"
    exit 0
fi

START=$SECONDS
if (($# == 0)); then
    set -- tests/test_model.py tests/test_model_inputs.py tests/test_pipeline.py -q
fi
[[ -f $FAKE_CPUINFO ]] || fail "$FAKE_CPUINFO is missing"
[[ -f $SSD_MODEL ]] || fail "$SSD_MODEL is missing (the shared test models belong in ../shared/models)"
export DEBIAN_FRONTEND=noninteractive

# qemu-aarch64-static (Debian's qemu-user-static).
if ! command -v qemu-aarch64-static >/dev/null; then
    say "installing qemu-user-static"
    if ! apt-get install -y -q --no-install-recommends qemu-user-static >/dev/null; then
        apt-get update -q >/dev/null || true
        apt-get install -y -q --no-install-recommends qemu-user-static >/dev/null ||
            fail "cannot install qemu-user-static with apt-get"
    fi
fi
QEMU=$(command -v qemu-aarch64-static)

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # one run at a time per cache
if [[ ${EDGEDETECT_ARM64_REFRESH:-0} == 1 ]]; then
    say "EDGEDETECT_ARM64_REFRESH=1: rebuilding $CACHE"
    rm -rf "$SYSROOT" "$SITE" "$CACHE/apt" "$CACHE/pycache"
fi

# The sysroot: arm64 .debs from the machine's own Debian sources, resolved and downloaded by apt-get
# with a private state (arm64 as the only architecture, an empty dpkg status so the whole dependency
# closure comes down), then unpacked with dpkg-deb -x. The host's dpkg and apt state stay untouched.
sysroot_stamp="bookworm arm64: ${DEBS[*]}"
if [[ ! -f $SYSROOT/.stamp || $(<"$SYSROOT/.stamp") != "$sysroot_stamp" ]]; then
    say "building the arm64 sysroot in $SYSROOT"
    A=$CACHE/apt
    rm -rf "$A" "$SYSROOT" "$SYSROOT.tmp"
    mkdir -p "$A/lists/partial" "$A/archives/partial" "$A/state" "$A/cache" "$SYSROOT.tmp"
    : >"$A/state/status"
    cat >"$A/apt.conf" <<EOF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Install-Recommends "false";
Dir::State "$A/state";
Dir::State::Lists "$A/lists";
Dir::State::status "$A/state/status";
Dir::Cache "$A/cache";
Dir::Cache::archives "$A/archives";
Debug::NoLocking "true";
EOF
    # A source other than Debian's that has no arm64 index makes update exit non-zero; what matters
    # is whether the packages can then be downloaded.
    APT_CONFIG=$A/apt.conf apt-get update -q >"$A/update.log" 2>&1 ||
        say "apt-get update (arm64) reported errors; see $A/update.log"
    APT_CONFIG=$A/apt.conf apt-get install -y -q --download-only "${DEBS[@]}" >"$A/download.log" 2>&1 ||
        { cat "$A/update.log" "$A/download.log" >&2; fail "cannot download the arm64 packages with apt-get"; }
    n=0
    for deb in "$A"/archives/*.deb; do
        dpkg-deb -x "$deb" "$SYSROOT.tmp" || fail "cannot unpack $deb"
        n=$((n + 1))
    done
    # Empty stand-ins, so that the emulated Python's default site dirs do not fall through qemu's
    # library prefix to the host's (x86-64) ones.
    mkdir -p "$SYSROOT.tmp/usr/lib/python3/dist-packages" "$SYSROOT.tmp/usr/local/lib/python3.11/dist-packages"
    [[ -x $SYSROOT.tmp/usr/bin/python3.11 ]] || fail "the arm64 packages held no usr/bin/python3.11"
    printf '%s' "$sysroot_stamp" >"$SYSROOT.tmp/.stamp"
    mv "$SYSROOT.tmp" "$SYSROOT"
    rm -f "$A"/archives/*.deb
    say "sysroot: $n arm64 packages unpacked ($(du -sh "$SYSROOT" | cut -f1))"
fi

# The aarch64 wheels, installed by the host's pip for CPython 3.11 on aarch64.
site_stamp="cp311 ${PLATFORMS[*]} ${REQS[*]}"
if [[ ! -f $SITE/.stamp || $(<"$SITE/.stamp") != "$site_stamp" ]]; then
    say "installing the aarch64 wheels in $SITE"
    rm -rf "$SITE" "$SITE.tmp" "$CACHE/pycache"
    python3 -m pip install -q --disable-pip-version-check --no-compile --target "$SITE.tmp" \
        "${PLATFORMS[@]}" --python-version 3.11 --implementation cp --only-binary=:all: \
        "${REQS[@]}" >"$CACHE/pip.log" 2>&1 ||
        { cat "$CACHE/pip.log" >&2; fail "pip could not install the aarch64 wheels"; }
    printf '%s' "$site_stamp" >"$SITE.tmp/.stamp"
    mv "$SITE.tmp" "$SITE"
fi
resolved=$(find "$SITE" -maxdepth 1 -name '*.dist-info' -printf '%f\n' | sed 's/\.dist-info$//' | sort | tr '\n' ' ')
say "aarch64 wheels: $resolved"

# sys.executable: this wrapper (qemu's -0 makes it argv[0]), so that a test that starts
# `sys.executable` or `python3` in a subprocess gets the emulated Python too, without binfmt_misc.
mkdir -p "$CACHE/bin"
cat >"$PY.tmp" <<EOF
#!/bin/sh
export QEMU_LD_PREFIX="\${QEMU_LD_PREFIX:-$SYSROOT}" QEMU_CPU="\${QEMU_CPU:-$QEMU_CPU}"
exec "$QEMU" -0 "\$0" "$SYSROOT/usr/bin/python3.11" "\$@"
EOF
chmod +x "$PY.tmp"
mv "$PY.tmp" "$PY"
ln -sf python3 "$CACHE/bin/python"
ln -sf python3 "$CACHE/bin/python3.11"

export QEMU_LD_PREFIX=$SYSROOT
export PATH=$CACHE/bin:$PATH
export PYTHONPATH=$SITE:$ROOT
export PYTHONNOUSERSITE=1
export PYTHONPYCACHEPREFIX=$CACHE/pycache # no .pyc from this run in the work tree
export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:+$PYTEST_ADDOPTS }-p no:cacheprovider"
export EDGEDETECT_MODELS_DIR=$ROOT/../shared/models:$ROOT/../shared/media
say "setup done in $((SECONDS - START)) s (qemu $("$QEMU" --version | head -1 | cut -d' ' -f3), QEMU_CPU=$QEMU_CPU)"

# ai-edge-litert 2.x reads /proc/cpuinfo and crashes (SIGSEGV in allocate_tensors) on the host's
# x86-64 one, which qemu 7.2 passes through. A fake Pi 4 cpuinfo goes over /proc/cpuinfo in a
# private mount namespace; where that is refused, it goes into the sysroot, which qemu's library
# prefix also serves for /proc/cpuinfo.
rc=0
if unshare -m true 2>/dev/null; then
    rm -f "$SYSROOT/proc/cpuinfo"
    say "fake Pi 4 /proc/cpuinfo: bind-mounted in a private mount namespace"
    unshare -m bash "$ROOT/.ci/aarch64.sh" --in-namespace "$@" || rc=$?
else
    mkdir -p "$SYSROOT/proc"
    cp "$FAKE_CPUINFO" "$SYSROOT/proc/cpuinfo"
    say "fake Pi 4 /proc/cpuinfo: unshare -m refused here; served from $SYSROOT/proc/cpuinfo"
    (emulated_run "$@") || rc=$?
fi
if ((rc != 0)); then
    say "FAILED after $((SECONDS - START)) s (exit $rc)"
    exit "$rc"
fi
say "PASSED in $((SECONDS - START)) s"
