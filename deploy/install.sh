#!/usr/bin/env bash
# Install edgedetect as a systemd service on 64-bit Raspberry Pi OS (Bookworm or Trixie).
#
#   sudo deploy/install.sh              install or update; safe to run again
#   sudo deploy/install.sh --uninstall  remove the service and program; keep config and models
#   sudo deploy/install.sh --uninstall --purge   also remove config, models and the user
#
# What lands where:
#   /opt/edgedetect/venv                 the program (venv with --system-site-packages:
#                                        picamera2 and python3-systemd come from apt)
#   /etc/edgedetect/edgedetect.toml      the config, written only if absent
#   /var/lib/edgedetect/models           the model cache (the unit's StateDirectory)
#   /etc/systemd/system/edgedetect.service
#
# The release comes from /etc/os-release (under --root: DIR/etc/os-release): Bookworm and Trixie
# install the same apt packages; pip keeps to pyproject.toml's numpy/opencv pins for the Python
# the release ships (3.11 with apt's numpy 1.x, 3.13 with numpy 2.x). A 32-bit OS is refused.
#
# Test flags: --root DIR installs into DIR instead of /; --no-apt, --no-systemctl, --no-user,
# --no-pull skip the steps that need a real Pi; --allow-any-arch lifts the arm64 check;
# --python PY picks the interpreter for the venv; --no-deps installs the project without its
# dependencies; --wheel FILE installs a built wheel instead of building the source dir;
# --models-from DIR copies the model from a local mirror instead of downloading.
set -euo pipefail

NAME=edgedetect
SERVICE_USER=edgedetect
MODEL=ssd-mobilenet-v2-coco
MIN_PY=(3 11)

ROOT=""
DO_APT=1
DO_SYSTEMCTL=1
DO_USER=1
DO_PULL=1
UNINSTALL=0
PURGE=0
ALLOW_ANY_ARCH=0
NO_DEPS=0
PYTHON=/usr/bin/python3
MODELS_FROM=""
WHEEL=""
SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The same names on Bookworm and Trixie (picamera2, kms++ and rpicam-apps from the Raspberry Pi
# archive). Installed without their recommends, as the picamera2 manual advises for Lite: those
# are the desktop's (Qt, OpenGL). Each package the daemon imports is named here, so none depends
# on a recommend: picamera2 (the camera), kms++ (the monitor's DRM/KMS output), systemd (journal
# fields), numpy.
APT_PACKAGES=(python3-venv python3-pip python3-picamera2 python3-kms++ python3-systemd python3-numpy rpicam-apps-lite)
# Set by check_release from os-release: the codename, and that release's Python and numpy major.
OS_CODENAME=""
OS_PYTHON=""
OS_NUMPY=""

say() { printf 'edgedetect-install: %s\n' "$*"; }
die() { printf 'edgedetect-install: error: %s\n' "$*" >&2; exit 1; }
warn() { printf 'edgedetect-install: warning: %s\n' "$*" >&2; }

usage() {
    sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a directory}"; shift ;;
        --no-apt) DO_APT=0 ;;
        --no-systemctl) DO_SYSTEMCTL=0 ;;
        --no-user) DO_USER=0 ;;
        --no-pull) DO_PULL=0 ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        --allow-any-arch) ALLOW_ANY_ARCH=1 ;;
        --no-deps) NO_DEPS=1 ;;
        --python) PYTHON="${2:?--python needs an interpreter}"; shift ;;
        --models-from) MODELS_FROM="${2:?--models-from needs a directory}"; shift ;;
        --wheel) WHEEL="${2:?--wheel needs a .whl file}"; shift ;;
        --source-dir) SOURCE_DIR="${2:?--source-dir needs a directory}"; shift ;;
        -h|--help) usage 0 ;;
        *) printf 'edgedetect-install: unknown option %s\n' "$1" >&2; usage 2 ;;
    esac
    shift
done

if [ "$PURGE" = 1 ] && [ "$UNINSTALL" = 0 ]; then
    die "--purge only goes with --uninstall"
fi
if [ -n "$ROOT" ]; then
    ROOT="$(cd "$ROOT" && pwd)" || die "--root $ROOT: no such directory"
fi

OPT="$ROOT/opt/$NAME"
VENV="$OPT/venv"
ETC="$ROOT/etc/$NAME"
CONFIG="$ETC/$NAME.toml"
STATE="$ROOT/var/lib/$NAME"
CACHE="$STATE/models"
UNIT="$ROOT/etc/systemd/system/$NAME.service"
STAMP="$VENV/.edgedetect-source.sha256"

# --- checks that fail early ------------------------------------------------------------------

check_platform() {
    [ -n "$ROOT" ] || [ "$(id -u)" = 0 ] || die "run as root (sudo $0)"
    local machine bits dpkg_arch=""
    machine="$(uname -m)"
    bits="$(getconf LONG_BIT 2>/dev/null || echo 64)"
    if command -v dpkg >/dev/null 2>&1; then
        dpkg_arch="$(dpkg --print-architecture)"
    fi
    if [ "$ALLOW_ANY_ARCH" = 0 ]; then
        case "$machine/$bits/${dpkg_arch:-arm64}" in
            aarch64/64/arm64) ;;
            armv*|*/32/*|*/armhf) die "32-bit OS ($machine, ${dpkg_arch:-?}): LiteRT (ai-edge-litert) has no 32-bit ARM wheels; install the 64-bit Raspberry Pi OS (Bookworm or Trixie, arm64)" ;;
            *) die "unsupported architecture $machine/${dpkg_arch:-?}: edgedetect installs on 64-bit Raspberry Pi OS (arm64)" ;;
        esac
    fi
}

os_release_field() {
    sed -n "s/^$1=//p" "$2" | head -n1 | sed 's/^"\(.*\)"$/\1/'
}

check_release() {
    local f="$ROOT/etc/os-release" name
    if [ ! -r "$f" ] || [ -z "$(os_release_field VERSION_CODENAME "$f")" ]; then
        say "os: no VERSION_CODENAME in $f: release not checked (edgedetect installs on Bookworm and Trixie)"
        return
    fi
    OS_CODENAME="$(os_release_field VERSION_CODENAME "$f")"
    name="$(os_release_field PRETTY_NAME "$f")"
    case "$OS_CODENAME" in
        bookworm) OS_PYTHON=3.11; OS_NUMPY=1 ;;
        trixie) OS_PYTHON=3.13; OS_NUMPY=2 ;;
        jessie|stretch|buster|bullseye)
            die "${name:-$OS_CODENAME} is too old: edgedetect installs on 64-bit Raspberry Pi OS Bookworm or Trixie" ;;
        *)
            warn "${name:-$OS_CODENAME}: not a release edgedetect is tested on (Bookworm, Trixie); continuing"
            return ;;
    esac
    say "os: ${name:-$OS_CODENAME}: Python $OS_PYTHON, numpy $OS_NUMPY.x from apt"
}

check_python() {
    [ -x "$PYTHON" ] || command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (install python3)"
    local ver
    ver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" || die "$PYTHON does not run"
    if ! "$PYTHON" -c "import sys; sys.exit(sys.version_info[:2] < (${MIN_PY[0]}, ${MIN_PY[1]}))"; then
        die "Python $ver is too old: edgedetect needs Python ${MIN_PY[0]}.${MIN_PY[1]} or newer (Raspberry Pi OS Bookworm has 3.11, Trixie 3.13)"
    fi
    # apt's picamera2, simplejpeg and numpy are built for the release's own Python; pip picks numpy
    # (1.x or 2.x) by the venv's Python.
    if [ -n "$OS_PYTHON" ] && [ "$ver" != "$OS_PYTHON" ]; then
        warn "$PYTHON is Python $ver, but $OS_CODENAME's is $OS_PYTHON (numpy $OS_NUMPY.x): apt's picamera2 may not load in the venv"
    fi
    [ -f "$SOURCE_DIR/pyproject.toml" ] || die "--source-dir $SOURCE_DIR: no pyproject.toml (expected the edgedetect source tree)"
}

# --- steps -----------------------------------------------------------------------------------

install_apt() {
    [ "$DO_APT" = 1 ] || { say "apt: skipped (--no-apt)"; return; }
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" = 0 ]; then
        say "apt: packages present"
        return
    fi
    say "apt: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

create_user() {
    [ "$DO_USER" = 1 ] || { say "user: skipped (--no-user)"; return; }
    local rootflag=()
    [ -n "$ROOT" ] && rootflag=(--root "$ROOT")
    if ! getent_user; then
        useradd "${rootflag[@]}" --system --user-group --home-dir "/var/lib/$NAME" --no-create-home \
            --shell /usr/sbin/nologin --comment "edgedetect daemon" "$SERVICE_USER"
        say "user: created $SERVICE_USER"
    fi
    # The unit adds video and render itself (SupplementaryGroups=); membership here also lets
    # 'sudo -u edgedetect edgedetect doctor' see the devices as the service does.
    local g
    for g in video render; do
        if group_exists "$g"; then
            usermod "${rootflag[@]}" -a -G "$g" "$SERVICE_USER"
        fi
    done
}

getent_user() {
    if [ -n "$ROOT" ]; then
        grep -q "^$SERVICE_USER:" "$ROOT/etc/passwd" 2>/dev/null
    else
        getent passwd "$SERVICE_USER" >/dev/null
    fi
}

group_exists() {
    if [ -n "$ROOT" ]; then
        grep -q "^$1:" "$ROOT/etc/group" 2>/dev/null
    else
        getent group "$1" >/dev/null
    fi
}

make_dirs() {
    install -d -m 0755 "$OPT" "$ETC" "$ROOT/etc/systemd/system"
    install -d -m 0750 "$STATE" "$CACHE"
    if [ "$DO_USER" = 1 ]; then
        chown "$(owner_ids)" "$STATE" "$CACHE"
    fi
}

owner_ids() {
    # Numeric ids from the target root's passwd, so --root works without chroot.
    local uid gid
    uid="$(awk -F: -v u="$SERVICE_USER" '$1 == u {print $3}' "$ROOT/etc/passwd")"
    gid="$(awk -F: -v u="$SERVICE_USER" '$1 == u {print $4}' "$ROOT/etc/passwd")"
    printf '%s:%s' "$uid" "$gid"
}

source_hash() {
    # What the installed program was built from: files that ship, by content.
    (cd "$SOURCE_DIR" && find pyproject.toml edgedetect models -type f \
        \( -name '*.py' -o -name '*.toml' -o -path '*/static/*' \) -not -path '*/__pycache__/*' -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

install_program() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "venv: creating $VENV"
        "$PYTHON" -m venv --system-site-packages "$VENV"
    fi
    local want have=""
    if [ -n "$WHEEL" ]; then
        want="$(sha256sum "$WHEEL" | cut -d' ' -f1)"
    else
        want="$(source_hash)"
    fi
    [ -f "$STAMP" ] && have="$(cat "$STAMP")"
    if [ "$want" = "$have" ]; then
        say "program: up to date"
        return
    fi
    local pip_flags=(--quiet --disable-pip-version-check --no-input --no-warn-script-location)
    [ "$NO_DEPS" = 1 ] && pip_flags+=(--no-deps)
    if [ -n "$WHEEL" ]; then
        say "program: installing $WHEEL"
        "$VENV/bin/python" -m pip install "${pip_flags[@]}" --force-reinstall "$WHEEL"
    else
        say "program: installing from $SOURCE_DIR"
        # Build out of tree: the source dir may be read-only or owned by another user.
        local build
        build="$(mktemp -d)"
        cp -r "$SOURCE_DIR/pyproject.toml" "$SOURCE_DIR/LICENSE" "$SOURCE_DIR/edgedetect" "$SOURCE_DIR/models" "$build/"
        if [ -f "$SOURCE_DIR/README.md" ]; then cp "$SOURCE_DIR/README.md" "$build/"; fi
        "$VENV/bin/python" -m pip install "${pip_flags[@]}" "$build"
        rm -rf "$build"
    fi
    printf '%s\n' "$want" > "$STAMP"
}

pull_model() {
    [ "$DO_PULL" = 1 ] || { say "model: skipped (--no-pull)"; return; }
    # The catalogue checks every file's sha256; a mirror copy is copied into the cache (the
    # service reads only the cache), otherwise the file is downloaded.
    EDGEDETECT_CACHE_DIR="$CACHE" EDGEDETECT_MODELS_DIR="$MODELS_FROM" "$VENV/bin/python" -I - "$MODEL" <<'PY'
import os, shutil, sys
from edgedetect.detect.catalogue import Catalogue

name = sys.argv[1]
cat = Catalogue.load()
entry = cat.get(name)
mirrors, cat.mirrors = cat.mirrors, []
for f in entry.files:
    dest = cat.cached_path(entry, f)
    if cat.find(entry, f) is not None:
        print(f"edgedetect-install: model: {dest.name} present")
        continue
    src = Catalogue(cat.entries, mirrors, cat.cache).find(entry, f) if mirrors else None
    if src is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        print(f"edgedetect-install: model: {dest.name} copied from {src.parent}")
    else:
        cat.pull(name)
        print(f"edgedetect-install: model: {dest.name} downloaded")
PY
    if [ "$DO_USER" = 1 ]; then
        chown -R "$(owner_ids)" "$CACHE"
    fi
}

write_config() {
    if [ -e "$CONFIG" ]; then
        say "config: $CONFIG kept"
        return
    fi
    local token tmp
    token="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    tmp="$(mktemp)"
    sed "s/@TOKEN@/$token/" "$SOURCE_DIR/deploy/edgedetect.toml" > "$tmp"
    # It holds the viewer token (and MQTT password if set): readable by the service only.
    install -m 0640 "$tmp" "$CONFIG"
    rm -f "$tmp"
    if [ "$DO_USER" = 1 ]; then
        chown "root:$(owner_ids | cut -d: -f2)" "$CONFIG"
    fi
    say "config: wrote $CONFIG"
}

install_unit() {
    if cmp -s "$SOURCE_DIR/systemd/$NAME.service" "$UNIT"; then
        say "unit: up to date"
    else
        install -m 0644 "$SOURCE_DIR/systemd/$NAME.service" "$UNIT"
        say "unit: installed $UNIT"
    fi
    [ "$DO_SYSTEMCTL" = 1 ] || { say "systemctl: skipped (--no-systemctl)"; return; }
    systemctl daemon-reload
    systemctl enable "$NAME.service"
    if systemctl is-active --quiet "$NAME.service"; then
        systemctl restart "$NAME.service"
    fi
}

print_url() {
    local host token
    host="$(hostname -I 2>/dev/null | awk '{print $1}')"
    token="$(sed -n 's/^token *= *"\(.*\)".*/\1/p' "$CONFIG" 2>/dev/null | head -n1)"
    say "done. Start it now with 'sudo systemctl start $NAME' (it also starts at every boot)."
    say "viewer: http://${host:-$(hostname)}:8080/${token:+?token=$token}"
    say "figures: journalctl -u $NAME -f    check the set-up: sudo -u $SERVICE_USER /opt/$NAME/venv/bin/edgedetect doctor --config /etc/$NAME/$NAME.toml"
}

uninstall() {
    if [ "$DO_SYSTEMCTL" = 1 ]; then
        systemctl disable --now "$NAME.service" 2>/dev/null || true
    fi
    rm -f "$UNIT"
    rm -rf "$OPT"
    if [ "$DO_SYSTEMCTL" = 1 ]; then
        systemctl daemon-reload
    fi
    say "removed the service and $OPT"
    if [ "$PURGE" = 1 ]; then
        rm -rf "$ETC" "$STATE"
        if [ "$DO_USER" = 1 ] && getent_user; then
            local rootflag=()
            [ -n "$ROOT" ] && rootflag=(--root "$ROOT")
            userdel "${rootflag[@]}" "$SERVICE_USER"
        fi
        say "purged $ETC, $STATE and the $SERVICE_USER user"
    else
        say "kept $ETC (config) and $STATE (models); --purge removes them"
    fi
}

main() {
    check_platform
    check_release
    check_python
    if [ "$UNINSTALL" = 1 ]; then
        uninstall
        return
    fi
    install_apt
    create_user
    make_dirs
    install_program
    pull_model
    write_config
    install_unit
    print_url
}

main
