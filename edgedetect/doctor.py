"""`edgedetect doctor`: checks the set-up the daemon needs and says how to fix what fails.

One line a check: `ok   <check>: detail` or `FAIL <check>: what is wrong -> how to fix`.
Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import errno
import glob
import grp
import os
import platform
import pwd
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgedetect.errors import UserError

CAMERA_GROUPS = ("video", "render")
CAMERA_DEVICES = ("video*", "media*", "dma_heap/*", "vchiq")
LIST_CAMERAS = ("rpicam-hello", "libcamera-hello")
# The config flags a check reads; the others (--loop, --no-pace, --record, thresholds) only change a run.
DOCTOR_FLAGS = frozenset({"--source", "--model", "--labels", "--threads", "--models-dir", "--host", "--port",
                          "--token", "--sysfs-root", "--procfs-root"})


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False  # does not apply to this machine (a Pi's sensors on a PC): neither ok nor failed

    def line(self) -> str:
        if self.skipped:
            return f"skip {self.name}: {self.detail}"
        if self.ok:
            return f"ok   {self.name}: {self.detail}"
        return f"FAIL {self.name}: {self.detail}" + (f" -> {self.fix}" if self.fix else "")


@dataclass
class Env:
    """What the checks look at, so tests can point them at a fake machine."""

    dev_root: Path = Path("/dev")
    which: Callable[[str], str | None] = shutil.which
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run
    uid: int = -1  # -1: this process's user
    machine: str = ""  # uname -m; empty: this machine's
    pointer_bits: int = 0  # this Python's word size; 0: this process's

    def user(self) -> tuple[str, list[int]]:
        uid = os.getuid() if self.uid < 0 else self.uid
        name = pwd.getpwuid(uid).pw_name
        gids = os.getgroups() if self.uid < 0 else os.getgrouplist(name, pwd.getpwuid(uid).pw_gid)
        return name, gids


def check_config(args: argparse.Namespace) -> tuple[Check, Any]:
    from edgedetect import config
    from edgedetect.cli import config_from_args

    try:
        cfg = config_from_args(args)
    except UserError as e:
        return Check("config", False, str(e), "fix the key or value named; 'edgedetect config' prints "
                     "every key with its meaning (other checks use the built-in defaults)"), config.Config()
    where = args.config or (str(config.DEFAULT_CONFIG_PATH) if config.DEFAULT_CONFIG_PATH.exists() else "defaults")
    return Check("config", True, f"{where} valid"), cfg


def check_runtime() -> Check:
    from edgedetect.detect.interpreter import interpreter_class

    try:
        _, name = interpreter_class()
    except UserError as e:
        return Check("runtime", False, str(e), "pip install ai-edge-litert in the daemon's venv")
    from importlib import metadata

    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = "?"
    return Check("runtime", True, f"{name} {version}")


def check_model(cfg: Any) -> Check:
    from edgedetect.detect.catalogue import Catalogue
    from edgedetect.detect.resolve import load_configured, resolve_model

    try:
        cat = Catalogue.load(cfg.model.models_dir or None)
        files = resolve_model(cfg.model, cat, download=False)
        model = load_configured(cfg.model, files, threads=1)
    except UserError as e:
        name = cfg.model.path
        fix = (f"edgedetect models pull {name} (as the service: sudo -u edgedetect "
               f"EDGEDETECT_CACHE_DIR=/var/lib/edgedetect/models edgedetect models pull {name})"
               if name in Catalogue.load().entries else "set model.path to an existing .tflite file "
               "or a catalogue name ('edgedetect models list')")
        return Check("model", False, str(e), fix)
    w, h = model.input_size
    labels = len(model.labels) if getattr(model, "labels", None) else 0
    detail = f"{files.name}: {model.kind} ({model.family}), input {w}x{h}, {labels} labels"
    if labels == 0:
        return Check("model", False, detail + ", no labels file",
                     "set model.labels to the labels file (classes would show as numbers)")
    return Check("model", True, detail)


CORAL_USB_IDS = {("1a6e", "089a"): "Coral USB Accelerator (before its firmware is loaded)",
                 ("18d1", "9302"): "Coral USB Accelerator"}
USB2_SPEED = "480"  # Mbit/s in sysfs `speed`; USB 3 ports say 5000


def coral_usb_devices(sysfs_root: Path) -> list[tuple[str, str, str]]:
    """(sysfs device name, description, speed) of every Coral USB Accelerator plugged in."""
    found = []
    for dev in sorted((sysfs_root / "bus" / "usb" / "devices").glob("*")):
        try:
            ids = ((dev / "idVendor").read_text().strip().lower(), (dev / "idProduct").read_text().strip().lower())
        except OSError:
            continue
        if ids in CORAL_USB_IDS:
            try:
                speed = (dev / "speed").read_text().strip()
            except OSError:
                speed = "?"
            found.append((dev.name, CORAL_USB_IDS[ids], speed))
    return found


def check_accelerator(cfg: Any) -> list[Check]:
    """The delegate library model.delegate names, and for the Edge TPU a Coral USB Accelerator on a
    USB 3 port."""
    from edgedetect.detect.delegates import (
        EDGETPU,
        EDGETPU_INSTALL,
        EDGETPU_LIBRARY,
        PLUGIN_SYMBOLS,
    )

    mc = cfg.model
    corals = coral_usb_devices(Path(cfg.stats.sysfs_root))
    if not mc.delegate:
        detail = "none configured (CPU)"
        if corals:
            detail += f"; a {corals[0][1]} is plugged in: set model.delegate = \"edgetpu\" to use it"
        return [Check("accelerator", True, detail)]
    library = EDGETPU_LIBRARY if mc.delegate == EDGETPU else str(Path(mc.delegate).expanduser())
    try:
        lib = ctypes.CDLL(library)
    except OSError as e:
        reason = str(e).splitlines()[0] if str(e) else "dlopen failed"
        fix = EDGETPU_INSTALL if mc.delegate == EDGETPU else "set model.delegate to the delegate library's path"
        out = [Check("accelerator", False, f"{library} not found ({reason})", fix)]
    else:
        missing = [sym for sym in PLUGIN_SYMBOLS if not hasattr(lib, sym)]
        out = [Check("accelerator", False, f"{library} is not a TFLite external delegate (no {', '.join(missing)})",
                     "set model.delegate to a delegate library built for TFLite") if missing
               else Check("accelerator", True, f"{library} loads")]
    device = next((o.split("=", 1)[1].strip() for o in mc.delegate_options if o.startswith("device=")), "")
    if mc.delegate != EDGETPU or device.startswith("pci"):
        return out
    if not corals:
        out.append(Check("coral", False, "no Coral USB Accelerator found (USB ids 1a6e:089a or 18d1:9302)",
                         "plug it in (a USB 3 port: blue on a Pi 4); for an M.2 or PCIe Coral set "
                         "model.delegate_options = [\"device=pci\"]"))
        return out
    name, what, speed = corals[0]
    if speed == USB2_SPEED:
        out.append(Check("coral", False, f"{what} on a USB 2 port ({name}, 480 Mbit/s): inference is several "
                         "times slower there", "plug it into one of the blue USB 3 ports"))
    else:
        out.append(Check("coral", True, f"{what} at {name}, {speed} Mbit/s"))
    return out


def _camera_kind(uri: str) -> str:
    from edgedetect.sources import describe_uri

    return describe_uri(uri)


def check_cameras(cfg: Any, env: Env) -> list[Check]:
    """Each camera's source; with [cameras], each check is named after its camera."""
    from edgedetect.config import camera_configs

    if not getattr(cfg, "cameras", None):
        return [check_camera(cfg, env)]
    return [dataclasses.replace(check_camera(c, env), name=f"camera {name}") for name, c in camera_configs(cfg)]


def check_camera(cfg: Any, env: Env) -> Check:
    uri = cfg.source.uri
    kind = _camera_kind(uri)
    if kind == "picam":
        for tool in LIST_CAMERAS:
            exe = env.which(tool)
            if exe is None:
                continue
            try:
                out = env.run([exe, "--list-cameras"], capture_output=True, text=True, timeout=15)
            except (OSError, subprocess.TimeoutExpired) as e:
                return Check("camera", False, f"{tool} --list-cameras failed ({e})",
                             "check the ribbon cable and 'dmesg | grep -i -e imx -e ov5647'")
            text = (out.stdout or "") + (out.stderr or "")
            cams = [ln.strip() for ln in text.splitlines() if ln.strip()[:1].isdigit() and " : " in ln]
            if cams:
                return Check("camera", True, f"libcamera sees {len(cams)}: {cams[0]}")
            return Check("camera", False, f"{tool} --list-cameras: no cameras available",
                         "check the ribbon cable (contacts towards the HDMI ports on a Pi 4), then reboot")
        media = sorted(glob.glob(str(env.dev_root / "media*")))
        if media:
            return Check("camera", True, f"{', '.join(media)} present (rpicam-apps not installed to list cameras)")
        return Check("camera", False, f"no {env.dev_root}/media* device: libcamera will find no camera",
                     "connect the camera, check camera_auto_detect=1 in /boot/firmware/config.txt, reboot")
    if kind == "camera":
        dev = Path(uri) if uri.startswith("/") else env.dev_root / f"video{uri}"
        if not dev.exists():
            from edgedetect.sources.video import video_devices

            found = video_devices(env.dev_root)
            if not found:
                return Check("camera", False, f"{dev}: no such device, and no {env.dev_root}/video* at all",
                             "plug the camera in ('lsusb' lists USB devices; 'dmesg | tail' shows whether its "
                             "driver loaded)")
            return Check("camera", False, f"{dev}: no such device",
                         f"set source.uri to one of: {', '.join(map(str, found))}")
        if not os.access(dev, os.R_OK | os.W_OK):
            return Check("camera", False, f"{dev}: no read/write permission",
                         f"add the user to the device's group ({_group_of(dev)}): sudo usermod -aG {_group_of(dev)} USER")
        return Check("camera", True, f"{dev} readable and writable")
    if uri.startswith(("rtsp://", "rtsps://")):
        return check_rtsp_decoder(cfg.source, env)
    if kind in ("video", "images") and not Path(uri).exists():
        return Check("camera", False, f"{uri}: source file not found", "set source.uri to an existing file")
    return Check("camera", True, f"source {uri!r} is a {kind}, not a local camera")


def check_rtsp_decoder(src: Any, env: Env) -> Check:
    """Which decoder an RTSP camera's H.264 gets (the camera is not contacted: its codec is
    assumed H.264, the common case), and what its packets are used for."""
    from edgedetect.sources.base import redact
    from edgedetect.sources.stream import decoder_choice

    hw, why = decoder_choice("h264", src.hwaccel, str(env.dev_root / "video10"))
    clips = f"clips copied from {redact(src.record_uri)}" if src.record_uri else "clips copied from its own packets"
    detail = f"{redact(src.uri)}: H.264 decoded by {why}; {clips}"
    if hw is None and src.hwaccel == "v4l2m2m":
        return Check("camera", False, detail, "hwaccel = \"v4l2m2m\" needs the Pi's decoder (/dev/video10, "
                     "bcm2835-codec) and an FFmpeg with h264_v4l2m2m; set hwaccel = \"auto\" or \"off\"")
    return Check("camera", True, detail)


def _group_of(path: Path) -> str:
    try:
        return grp.getgrgid(path.stat().st_gid).gr_name
    except (KeyError, OSError):
        return "?"


def check_groups(env: Env) -> Check:
    name, gids = env.user()
    if os.geteuid() == 0 and env.uid < 0:
        return Check("groups", True, "running as root (the service runs as user edgedetect with "
                     "SupplementaryGroups=video render; run as that user: sudo -u edgedetect edgedetect doctor)")
    missing, present = [], []
    for g in CAMERA_GROUPS:
        try:
            gid = grp.getgrnam(g).gr_gid
        except KeyError:
            continue  # no such group on this system (render is absent without a GPU driver)
        (present if gid in gids else missing).append(g)
    if missing:
        return Check("groups", False, f"user {name} is not in {', '.join(missing)}",
                     f"sudo usermod -aG {','.join(missing)} {name}, then log in again")
    return Check("groups", True, f"user {name} in {', '.join(present) or 'no camera groups exist here'}")


def check_devices(env: Env) -> Check:
    found = sorted(p for pattern in CAMERA_DEVICES for p in glob.glob(str(env.dev_root / pattern)))
    if not found:
        return Check("devices", True, f"no camera devices under {env.dev_root} (none to check)")
    denied = [p for p in found if not os.access(p, os.R_OK | os.W_OK)]
    if denied:
        groups = sorted({_group_of(Path(p)) for p in denied})
        return Check("devices", False, f"no read/write access to {', '.join(denied)}",
                     f"add the user to group {', '.join(groups)} (the service gets video and render "
                     "from its unit)")
    return Check("devices", True, f"{len(found)} camera devices accessible")


def check_sysfs(cfg: Any) -> list[Check]:
    from edgedetect.system.sysfs import MODEL_FILE, TEMP_FILE, THROTTLED_FILE, SysfsReader

    root = Path(cfg.stats.sysfs_root)
    reader = SysfsReader(root)
    t = reader.read()
    out = []
    # Off a Pi the firmware's files are not missing, they do not exist: nothing to fix.
    skip = None if reader.is_raspberry_pi() else f"not a Raspberry Pi ({root / MODEL_FILE} does not name one)"
    if t.temperature_c is None and skip:
        out.append(Check("temperature", True, skip, skipped=True))
    elif t.temperature_c is None:
        out.append(Check("temperature", False, f"{root / TEMP_FILE} missing or unreadable",
                         "check stats.sysfs_root (default /sys); figures will lack the temperature"))
    else:
        out.append(Check("temperature", t.temperature_c < 80.0, f"{t.temperature_c:.1f} C",
                         "the SoC throttles from 80 C: add a heatsink or fan"))
    if t.throttled is None and skip:
        out.append(Check("throttling", True, skip, skipped=True))
    elif t.throttled is None:
        out.append(Check("throttling", False, f"{root / THROTTLED_FILE} missing or unreadable",
                         "the firmware driver is missing (update the Pi: sudo apt full-upgrade); throttling "
                         "will not be reported"))
    else:
        now = [f for f in t.flags if not f.endswith("_occurred")]
        past = [f for f in t.flags if f.endswith("_occurred")]
        detail = f"{t.throttled:#x} ({', '.join(t.flags) or 'none'})"
        if now:
            fix = ("use the official 5.1 V 3 A power supply" if "under_voltage" in now
                   else "improve cooling")
            out.append(Check("throttling", False, detail, fix))
        else:
            out.append(Check("throttling", True, detail + (" since boot" if past else "")))
    return out


def check_arch(env: Env) -> Check:
    """64-bit userland, as deploy/install.sh requires: a Pi 4 often runs a 64-bit kernel under a
    32-bit OS, so uname -m alone says aarch64; this Python's own word size tells the userland."""
    machine = env.machine or platform.machine()
    bits = env.pointer_bits or struct.calcsize("P") * 8
    if bits < 64 or machine.startswith(("armv", "i386", "i686")):
        return Check("arch", False, f"32-bit OS ({machine}, {bits}-bit Python)",
                     "LiteRT (ai-edge-litert) has no 32-bit ARM wheels: install the 64-bit Raspberry Pi OS "
                     "(Bookworm or Trixie, arm64)")
    return Check("arch", True, f"64-bit ({machine})")


def check_cma(cfg: Any) -> Check:
    from edgedetect.system.procfs import CMA_LOW_MB, MEMINFO_FILE, ProcfsReader

    root = Path(getattr(cfg.stats, "procfs_root", "/proc"))
    cma = ProcfsReader(root).cma()
    from edgedetect.config import camera_configs

    picam = any(_camera_kind(c.source.uri) == "picam" for _, c in camera_configs(cfg)) \
        if getattr(cfg, "cameras", None) else _camera_kind(cfg.source.uri) == "picam"
    if cma is None:
        if picam:
            return Check("cma", False, f"no CmaTotal in {root / MEMINFO_FILE}: the Pi camera's buffers come from CMA",
                         "keep dtoverlay=vc4-kms-v3d in /boot/firmware/config.txt (it reserves CMA), then reboot")
        return Check("cma", True, "no CMA reported (only the Pi camera needs it)")
    detail = f"{cma.free_mb:.0f} MB free of {cma.total_mb:.0f} MB"
    if picam and cma.low:
        return Check("cma", False, f"{detail}: the camera needs about {CMA_LOW_MB:.0f} MB to start",
                     "close other camera or GPU programs, or reserve more: dtoverlay=vc4-kms-v3d,cma-512 in "
                     "/boot/firmware/config.txt, then reboot")
    return Check("cma", True, detail)


def check_display(cfg: Any, env: Env) -> Check:
    """The monitor [display] mode asks for: the device, a connected screen and its mode, and that
    no other process (a desktop) is DRM master of the card."""
    from edgedetect.config import camera_configs
    from edgedetect.errors import DisplayError
    from edgedetect.sinks import screens
    from edgedetect.system import drm

    d = cfg.display
    if d.mode == "none":
        return Check("display", True, 'off ([display] mode = "none"; "auto" shows the stream on a monitor)')
    root = cfg.stats.sysfs_root
    shown = drm.connected(root)
    if d.mode == "auto" and not shown:
        return Check("display", True, "no monitor connected: mode auto shows nothing until one is (plug it in, "
                     "then restart the service)")
    cams = [c for name, c in camera_configs(cfg) if not d.camera or name == d.camera]
    picam = len(cams) == 1 and _camera_kind(cams[0].source.uri) == "picam"
    mode = ("drm" if picam else "kms") if d.mode == "auto" else d.mode
    try:
        if mode in ("drm", "qt") and not picam:
            return Check("display", False, f"mode {mode} shows the Pi camera's own preview, and the source is "
                         "not the Pi camera", 'set [display] mode = "kms" (or "auto") to see any source')
        kind, path = ("kms", screens.choose_card(root, str(env.dev_root))) if mode != "kms" else \
            screens.screen_device(d.device, root, str(env.dev_root))
        if kind == "kms" and mode == "kms" and not screens.kms_available():
            return Check("display", False, f"{path}: DRM/KMS needs the kms++ Python bindings, which are not "
                         "importable", f"{screens.KMS_INSTALL}; or set [display] device = \"/dev/fb0\"")
        if kind == "fb":
            geo = drm.fb_geometry(root, path.name)
            what = f"framebuffer {path} {geo.width}x{geo.height} {geo.bits_per_pixel} bpp"
            if not path.exists():
                return Check("display", False, f"{path}: no such framebuffer device",
                             "keep dtoverlay=vc4-kms-v3d in /boot/firmware/config.txt, or set [display] device")
            if not os.access(path, os.R_OK | os.W_OK):
                return Check("display", False, f"{path}: no read/write permission",
                             f"add the user to group {_group_of(path)}")
        else:
            what = f"DRM/KMS {path}" + (" (the camera's preview)" if mode != "kms" else "")
            if not path.exists():
                return Check("display", False, f"{path}: no such DRM device",
                             "keep dtoverlay=vc4-kms-v3d in /boot/firmware/config.txt and reboot")
        if not shown:
            return Check("display", False, f"{what}: no monitor connected",
                         "plug in the HDMI cable (HDMI 0, next to the power socket, on a Pi 4)")
        conn = shown[0]
        card = drm.card_path(conn.card, env.dev_root)
        owner = drm.master_holder(card, cfg.stats.procfs_root) if card.exists() else None
    except DisplayError as e:
        return Check("display", False, str(e).removeprefix("display: "))
    screen = f"{conn.name.split('-', 1)[1]} connected, {conn.modes[0] if conn.modes else 'no mode listed'}"
    if owner is not None:
        return Check("display", False, f"{what}: {screen}, but {owner} is DRM master of {card} (a desktop owns "
                     "the screen)", "boot to the console (sudo raspi-config: System Options, Boot, Console), or "
                     'use the viewer page in a kiosk and set [display] mode = "none" (docs/service.md)')
    return Check("display", True, f"{mode}: {what}; {screen}; no other DRM master")


def _mount_of(path: Path, procfs_root: Path) -> tuple[str, str] | None:
    """(device, mount point) of the filesystem holding `path`, from procfs's mounts table."""
    try:
        lines = (procfs_root / "self" / "mounts").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    best: tuple[str, str] | None = None
    for ln in lines:
        parts = ln.split()
        if len(parts) < 2:
            continue
        dev, mnt = parts[0], parts[1].replace("\\040", " ")
        if (path == Path(mnt) or Path(mnt) in path.parents) and (best is None or len(mnt) >= len(best[1])):
            best = (dev, mnt)
    return best


def check_storage(cfg: Any) -> Check:
    """Where the daemon writes (the event store; everything else goes to the journal), and room."""
    rec = getattr(cfg, "record", None)
    where = Path(getattr(rec, "dir", "/var/lib/edgedetect/events"))
    enabled = bool(getattr(rec, "enabled", False))
    min_free_mb = float(getattr(rec, "min_free_mb", 0.0))
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free = f"{usage.free / 2**30:.1f} GB free of {usage.total / 2**30:.1f} GB"
    mount = _mount_of(probe.resolve(), Path(getattr(cfg.stats, "procfs_root", "/proc")))
    on = ""
    if mount is not None:
        on = f" on {mount[0]}" + (" (the SD card)" if mount[0].startswith("/dev/mmcblk") else "")
    detail = f"{where}{'' if probe == where else ' (not made yet)'}{on}: {free}"
    if not enabled:
        return Check("storage", True, f"recording off; event store {detail}")
    name = pwd.getpwuid(os.geteuid()).pw_name
    target = where if where.exists() else probe
    if not os.access(target, os.W_OK | os.X_OK):
        return Check("storage", False, f"event store {detail}: {target} not writable by user {name}",
                     f"sudo install -d -o edgedetect {where} (and run doctor as the service: "
                     "sudo -u edgedetect edgedetect doctor), or set record.dir")
    if usage.free < min_free_mb * 2**20:
        return Check("storage", False, f"event store {detail}: below record.min_free_mb ({min_free_mb:g} MB), "
                     "recording would pause", "free space, or set record.dir to a larger drive (a USB disk)")
    return Check("storage", True, f"event store {detail}")


def check_port(cfg: Any) -> Check:
    http = cfg.http
    if not http.enabled:
        return Check("port", True, "viewer off (http.enabled = false)")
    from edgedetect.hosts import is_loopback

    if not is_loopback(http.host) and not http.token:
        return Check("port", False, f"http.host = {http.host!r} serves the network without http.token",
                     "set http.token in the config (the daemon refuses to start without it)")
    if http.port == 0:
        return Check("port", True, "port 0: a free port is picked at start")
    family = socket.AF_INET6 if ":" in http.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((http.host, http.port))
    except OSError as e:
        where = f"{http.host}:{http.port}"
        if e.errno == errno.EADDRINUSE:
            return Check("port", False, f"{where} is in use",
                         f"stop the program holding it (sudo ss -ltnp 'sport = :{http.port}'; if it is "
                         "edgedetect, the service is already running) or set http.port")
        if e.errno == errno.EACCES:
            return Check("port", False, f"{where}: permission denied", "use a port from 1024 up (http.port)")
        return Check("port", False, f"{where}: {e.strerror}", "set http.host to an address of this machine")
    return Check("port", True, f"{http.host}:{http.port} free")


def run_checks(args: argparse.Namespace, env: Env | None = None) -> list[Check]:
    env = env or Env()
    cfg_check, cfg = check_config(args)
    checks = [cfg_check, check_runtime(), check_model(cfg), *check_accelerator(cfg), *check_cameras(cfg, env),
              check_groups(env), check_devices(env), check_arch(env), *check_sysfs(cfg), check_cma(cfg),
              check_display(cfg, env), check_storage(cfg), check_port(cfg)]
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    env = Env(dev_root=Path(args.dev_root))
    checks = run_checks(args, env)
    for c in checks:
        print(c.line(), flush=True)
    failed = [c.name for c in checks if not c.ok]
    skipped = sum(c.skipped for c in checks)
    print(f"{len(checks) - len(failed) - skipped} ok, " + (f"{skipped} skipped, " if skipped else "")
          + f"{len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def register(subparsers: Any) -> None:
    from edgedetect.cli import add_config_flags

    p = subparsers.add_parser("doctor", help="check camera, model, permissions, display, port and config")
    add_config_flags(p, DOCTOR_FLAGS)
    p.add_argument("--dev-root", default="/dev", help=argparse.SUPPRESS)  # tests use a fake /dev
    p.set_defaults(func=cmd_doctor)
