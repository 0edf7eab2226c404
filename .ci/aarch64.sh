#!/usr/bin/env bash
# Run part of the pytest suite on the Raspberry Pi 4's software stack, emulated on an x86-64 machine,
# for one Raspberry Pi OS release (64-bit):
#   bookworm  Debian 12's arm64 Python 3.11, numpy 1.x, opencv-python-headless < 4.11
#   trixie    Debian 13's arm64 Python 3.13, numpy 2.x, opencv-python-headless 4.11+ (< 5)
# with the aarch64 wheels pip picks for that Python, run by qemu-aarch64 user-mode emulation as a
# Cortex-A72. No debootstrap: the release's arm64 .debs are unpacked into a sysroot that qemu uses as
# its library prefix, and the wheels are installed for aarch64 by the host's pip.
#
#   bash .ci/aarch64.sh [--release bookworm|trixie] [pytest args...]
#     default pytest args: tests/test_model.py tests/test_model_inputs.py tests/test_pipeline.py
#     (and tests/test_yolo.py when it exists) -m "not slow" -q
#
# Environment:
#   EDGEDETECT_ARM64_RELEASE  release when --release is not given (default bookworm)
#   EDGEDETECT_ARM64_CACHE    cache root; each release keeps its sysroot and wheels in its own
#                             subdirectory, <cache>/<release> (default /var/cache/edgedetect-arm64)
#   EDGEDETECT_ARM64_REFRESH  1: rebuild the release's sysroot and re-resolve its wheels
#   EDGEDETECT_ARM64_TIMEOUT  seconds allowed to the emulated pytest run (default 600)
#   QEMU_CPU                  emulated CPU (default cortex-a72, the Pi 4's core)
#
# Needs root (apt-get; a private mount namespace for the fake /proc/cpuinfo). Figures printed here
# are emulated (qemu runs aarch64 code tens of times slower): they are no measure of a Pi.
set -euo pipefail

RELEASE=${EDGEDETECT_ARM64_RELEASE:-bookworm}
case ${1-} in
--release)
    RELEASE=${2:?--release needs bookworm or trixie}
    shift 2
    ;;
--release=*)
    RELEASE=${1#--release=}
    shift
    ;;
esac

say() { printf 'aarch64 %s: %s\n' "$RELEASE" "$*"; }
fail() {
    printf 'aarch64 %s: FAILED: %s\n' "$RELEASE" "$*" >&2
    exit 1
}

# Per release: Python version, the numpy and opencv pins that pyproject.toml gives that Python (keep
# them in step), numpy's major version (checked by the probe), and the newest manylinux tag the
# release's glibc accepts.
case $RELEASE in
bookworm)
    PYV=3.11
    PINS=('numpy>=1.24,<2' 'opencv-python-headless>=4.8,<4.11') # 4.10: the last built against numpy 1
    NUMPY_MAJOR=1
    GLIBC_MINOR=36
    ;;
trixie)
    PYV=3.13
    PINS=('numpy>=2.0' 'opencv-python-headless>=4.11,<5')
    NUMPY_MAJOR=2
    GLIBC_MINOR=41
    ;;
*) fail "unknown release '$RELEASE' (bookworm or trixie)" ;;
esac
export EDGEDETECT_ARM64_RELEASE=$RELEASE # for the run in the private mount namespace

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_ROOT=${EDGEDETECT_ARM64_CACHE:-/var/cache/edgedetect-arm64}
CACHE=$CACHE_ROOT/$RELEASE
SYSROOT=$CACHE/sysroot
SITE=$CACHE/site
PY=$CACHE/bin/python3
FAKE_CPUINFO=$ROOT/.ci/fake-pi4-cpuinfo
SSD_MODEL=$ROOT/../shared/models/ssd_mobilenet_v2_coco_quant_postprocess.tflite
export QEMU_CPU=${QEMU_CPU:-cortex-a72}

# Debian arm64 packages: the release's Python and its shared libraries (apt resolves the closure;
# libstdc++6 and libgcc-s1 are what the manylinux wheels need beyond it).
DEBS=("python$PYV" "libpython$PYV-stdlib" libstdc++6 libgcc-s1 zlib1g)
REQS=('ai-edge-litert>=1.2' "${PINS[@]}" 'psutil>=5.9'
    'paho-mqtt>=2.0,<3' 'prometheus-client>=0.17'
    'pytest>=8' 'pytest-timeout>=2.3' tomli)
# pip takes each --platform literally (no manylinux_2_X implies the lower ones), and ai-edge-litert 2.x
# ships only manylinux_2_27_aarch64 wheels: without that tag pip quietly falls back to 1.4.0. Every
# tag up to the release's glibc (2.36 bookworm, 2.41 trixie) is installable there.
PLATFORMS=(--platform manylinux2014_aarch64)
for m in $(seq 17 "$GLIBC_MINOR"); do PLATFORMS+=(--platform "manylinux_2_${m}_aarch64"); done

# What runs inside the emulated Python before pytest: the figures to quote, and a check that the
# runtime loads and runs the real SSD model at all.
PROBE=$(cat <<'EOF'
import importlib.metadata as md, platform, statistics, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter

model, release, pyv, numpy_major = sys.argv[1:5]
tag = f"aarch64 {release}:"
cpuinfo = open("/proc/cpuinfo").read()
hw = [l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("Model")]
print(f"{tag} platform.machine() = {platform.machine()}")
print(f"{tag} python {platform.python_version()} ({sys.executable} -> Debian {release} arm64 python{pyv})")
print("{} numpy {} | opencv-python-headless {} | ai-edge-litert {} | psutil {}".format(
    tag, np.__version__, md.version("opencv-python-headless"), md.version("ai-edge-litert"), md.version("psutil")))
print(f"{tag} /proc/cpuinfo: {hw[0] if hw else 'NOT the fake Pi 4 one'}, "
      f"{cpuinfo.count('processor')} processors")
if platform.machine() != "aarch64" or not hw:
    sys.exit(f"{tag} probe: not an emulated aarch64 Pi 4")
if "%d.%d" % sys.version_info[:2] != pyv or np.__version__.split(".")[0] != numpy_major:
    sys.exit(f"{tag} probe: expected Python {pyv} and numpy {numpy_major}.x")
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
print(f"{tag} ssd_mobilenet_v2_coco_quant_postprocess invoke median {statistics.median(ms):.0f} ms "
      f"over {len(ms)} runs (num_threads=4, emulated {platform.machine()}, not a Pi figure); "
      f"outputs {shapes}")
if tuple(inp["shape"]) != (1, 300, 300, 3) or shapes != [(1,), (1, 20), (1, 20), (1, 20, 4)]:
    sys.exit(f"{tag} probe: unexpected SSD tensor shapes")
EOF
)

# Runs the probe and pytest under emulation. Called directly, or in a private mount namespace where
# the fake cpuinfo is bind-mounted over /proc/cpuinfo (see below).
emulated_run() {
    local rc=0
    "$PY" -c "$PROBE" "$SSD_MODEL" "$RELEASE" "$PYV" "$NUMPY_MAJOR" || rc=$?
    if ((rc != 0)); then
        if ((rc > 128)); then
            fail "the emulated probe was killed by signal $((rc - 128)) (a crash in ai-edge-litert is what a host, non-ARM /proc/cpuinfo causes)"
        fi
        fail "the emulated probe exited $rc"
    fi
    local shown
    printf -v shown ' %q' "$@"
    say "pytest$shown"
    cd "$ROOT"
    # SIGINT first: pytest stops and still prints the failures it has seen so far.
    timeout --signal=INT --kill-after=30 "${EDGEDETECT_ARM64_TIMEOUT:-600}" "$PY" -m pytest "$@" || rc=$?
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

# The host's Debian entries (one-line or deb822, for the host's own codename and its -updates and
# -security suites), rewritten for $RELEASE and arm64 as deb822 stanzas. The mirrors and keyrings
# are the host's: nothing here names a mirror.
debian_sources_for() {
    python3 - "$1" <<'EOF'
import glob, re, sys

target = sys.argv[1]
host = ""
for line in open("/etc/os-release"):
    if line.startswith("VERSION_CODENAME="):
        host = line.split("=", 1)[1].strip().strip('"')
if not host:
    sys.exit("no VERSION_CODENAME in /etc/os-release")
suite_re = re.compile(rf"^{re.escape(host)}(-updates|-security)?$")
entries = []  # (uri, suite, signed_by)

def add(types, uris, suites, comps, signed_by):
    if "deb" not in types or "main" not in comps:
        return
    for uri in uris:
        for suite in suites:
            m = suite_re.match(suite)
            if m and (uri, target + (m.group(1) or "")) not in [e[:2] for e in entries]:
                entries.append((uri, target + (m.group(1) or ""), signed_by))

lists = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
for path in lists:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        opts = {}
        m = re.match(r"^(\S+)\s+\[([^\]]*)\]\s+(.*)$", line)
        if m:
            kind, rest = m.group(1), m.group(3)
            opts = dict(o.split("=", 1) for o in m.group(2).split() if "=" in o)
        else:
            kind, _, rest = line.partition(" ")
        f = rest.split()
        if len(f) >= 3:
            add([kind], [f[0]], [f[1]], f[2:], opts.get("signed-by", ""))
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields, key = {}, None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in " \t" and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, val = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = val.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        add(fields.get("types", "").split(), fields.get("uris", "").split(), fields.get("suites", "").split(),
            fields.get("components", "").split(), fields.get("signed-by", ""))
if not entries:
    sys.exit(f"no Debian entry for {host} (main) in the host's apt sources")
for uri, suite, signed_by in entries:
    print(f"Types: deb\nURIs: {uri}\nSuites: {suite}\nComponents: main\nArchitectures: arm64")
    if signed_by and "\n" not in signed_by:
        print(f"Signed-By: {signed_by}")
    print()
EOF
}

# Merged /usr, as on a Raspberry Pi OS install: trixie's packages ship everything under usr/, while
# the interpreter path in every aarch64 binary is /lib/ld-linux-aarch64.so.1. Top-level bin, sbin,
# lib (and lib64 where there is a usr/lib64) become links into usr/; anything a package put in a
# top-level directory (bookworm's libc6 does) moves into usr/ first.
merge_usr() {
    local s=$1 d
    for d in bin sbin lib lib64; do
        if [[ -d $s/$d && ! -L $s/$d ]]; then
            mkdir -p "$s/usr/$d"
            cp -a "$s/$d/." "$s/usr/$d/"
            rm -rf "${s:?}/$d"
        fi
        if [[ -d $s/usr/$d || $d != lib64 ]]; then
            mkdir -p "$s/usr/$d"
            ln -sfn "usr/$d" "$s/$d"
        fi
    done
    # An absolute link inside the sysroot would point into the host under qemu's library prefix.
    local link target
    while IFS= read -r -d '' link; do
        target=$(readlink "$link")
        ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$s$target")" "$link"
    done < <(find "$s" -type l -lname '/*' -print0)
}

START=$SECONDS
if (($# == 0)); then
    set -- tests/test_model.py tests/test_model_inputs.py tests/test_pipeline.py
    # YOLO decoding (being added): picked up as soon as the file exists.
    if [[ -f $ROOT/tests/test_yolo.py ]]; then set -- "$@" tests/test_yolo.py; fi
    set -- "$@" -m "not slow" -q
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
# The layout before releases had their own subdirectory: sysroot, site, ... at the cache root.
(
    flock 8
    if [[ -d $CACHE_ROOT/sysroot || -d $CACHE_ROOT/site ]]; then
        say "removing the single-release cache layout from $CACHE_ROOT"
        for old in sysroot site apt pycache bin pip.log; do rm -rf "${CACHE_ROOT:?}/$old"; done
    fi
) 8>"$CACHE_ROOT/.lock"
exec 9>"$CACHE/.lock"
flock 9 # one run at a time per release
if [[ ${EDGEDETECT_ARM64_REFRESH:-0} == 1 ]]; then
    say "EDGEDETECT_ARM64_REFRESH=1: rebuilding $CACHE"
    rm -rf "$SYSROOT" "$SITE" "$CACHE/apt" "$CACHE/pycache"
fi

# The sysroot: the release's arm64 .debs, resolved and downloaded by apt-get with a private
# configuration (the host's Debian mirrors with the release's suites, arm64 as the only
# architecture, an empty dpkg status so the whole dependency closure comes down), then unpacked with
# dpkg-deb -x. The host's apt sources, dpkg and apt state stay untouched.
sysroot_stamp="$RELEASE arm64 merged-usr: ${DEBS[*]}"
if [[ ! -f $SYSROOT/.stamp || $(<"$SYSROOT/.stamp") != "$sysroot_stamp" ]]; then
    say "building the arm64 sysroot in $SYSROOT"
    A=$CACHE/apt
    rm -rf "$A" "$SYSROOT" "$SYSROOT.tmp"
    mkdir -p "$A/lists/partial" "$A/archives/partial" "$A/state" "$A/cache" "$A/sources.list.d" \
        "$A/preferences.d" "$SYSROOT.tmp"
    : >"$A/state/status"
    : >"$A/sources.list"
    debian_sources_for "$RELEASE" >"$A/sources.list.d/debian.sources" ||
        fail "cannot derive $RELEASE sources from the host's apt sources"
    cat >"$A/apt.conf" <<EOF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Install-Recommends "false";
Dir::State "$A/state";
Dir::State::Lists "$A/lists";
Dir::State::status "$A/state/status";
Dir::Cache "$A/cache";
Dir::Cache::archives "$A/archives";
Dir::Etc::SourceList "$A/sources.list";
Dir::Etc::SourceParts "$A/sources.list.d";
Dir::Etc::Preferences "$A/preferences";
Dir::Etc::PreferencesParts "$A/preferences.d";
Debug::NoLocking "true";
EOF
    # A suite that is missing on a mirror makes update exit non-zero; what matters is whether the
    # packages can then be downloaded.
    APT_CONFIG=$A/apt.conf apt-get update -q >"$A/update.log" 2>&1 ||
        say "apt-get update (arm64) reported errors; see $A/update.log"
    APT_CONFIG=$A/apt.conf apt-get install -y -q --download-only "${DEBS[@]}" >"$A/download.log" 2>&1 ||
        { cat "$A/update.log" "$A/download.log" >&2; fail "cannot download the arm64 packages with apt-get"; }
    n=0
    for deb in "$A"/archives/*.deb; do
        dpkg-deb -x "$deb" "$SYSROOT.tmp" || fail "cannot unpack $deb"
        n=$((n + 1))
    done
    merge_usr "$SYSROOT.tmp"
    # Empty stand-ins, so that the emulated Python's default site dirs do not fall through qemu's
    # library prefix to the host's (x86-64) ones.
    mkdir -p "$SYSROOT.tmp/usr/lib/python3/dist-packages" "$SYSROOT.tmp/usr/local/lib/python$PYV/dist-packages"
    [[ -x $SYSROOT.tmp/usr/bin/python$PYV ]] || fail "the arm64 packages held no usr/bin/python$PYV"
    [[ -e $SYSROOT.tmp/lib/ld-linux-aarch64.so.1 ]] || fail "the sysroot has no lib/ld-linux-aarch64.so.1"
    printf '%s' "$sysroot_stamp" >"$SYSROOT.tmp/.stamp"
    mv "$SYSROOT.tmp" "$SYSROOT"
    rm -f "$A"/archives/*.deb
    say "sysroot: $n arm64 packages unpacked ($(du -sh "$SYSROOT" | cut -f1))"
fi

# The aarch64 wheels, installed by the host's pip for the release's CPython on aarch64. The host's
# pip checks Requires-Python against the Python it runs on unless told not to, so a Python other
# than the host's needs --ignore-requires-python (the cp3XX tags still pick the right builds).
pip_extra=()
if [[ $(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') != "$PYV" ]]; then
    pip_extra=(--ignore-requires-python)
fi
site_stamp="cp${PYV/./} ${PLATFORMS[*]} ${REQS[*]}"
if [[ ! -f $SITE/.stamp || $(<"$SITE/.stamp") != "$site_stamp" ]]; then
    say "installing the aarch64 wheels in $SITE"
    rm -rf "$SITE" "$SITE.tmp" "$CACHE/pycache"
    python3 -m pip install -q --disable-pip-version-check --no-compile --target "$SITE.tmp" \
        "${PLATFORMS[@]}" --python-version "$PYV" --implementation cp --only-binary=:all: \
        "${pip_extra[@]}" "${REQS[@]}" >"$CACHE/pip.log" 2>&1 ||
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
exec "$QEMU" -0 "\$0" "$SYSROOT/usr/bin/python$PYV" "\$@"
EOF
chmod +x "$PY.tmp"
mv "$PY.tmp" "$PY"
ln -sf python3 "$CACHE/bin/python"
ln -sf python3 "$CACHE/bin/python$PYV"

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
