"""The `edgedetect` command: run, config, models, and the tools the other modules add."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable

from edgedetect import __version__
from edgedetect.errors import UserError, shorten

# Flags shared by `run`, `config` and the tools that start a pipeline: (flag, config key, kwargs).
CONFIG_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--source", "source.uri", {"metavar": "URI", "help": "picam | demo | 0 | /dev/video0 | rtsp://... | file or folder"}),
    ("--no-pace", "source.pace", {"action": "store_const", "const": False,
                                  "help": "read files as fast as possible, not at their frame rate"}),
    ("--loop", "source.loop", {"action": "store_const", "const": True, "help": "restart a file at its end"}),
    ("--record", "record.enabled", {"action": "store_const", "const": True,
                                    "help": "keep events on disk: snapshots, clips, history ([record] in the config)"}),
    ("--model", "model.path", {"metavar": "NAME|FILE", "help": "catalogue name or .tflite file"}),
    ("--labels", "model.labels", {"metavar": "FILE", "help": "labels file"}),
    ("--threads", "model.threads", {"metavar": "N", "type": int,
                                    "help": "interpreter threads (default: all cores but one)"}),
    ("--models-dir", "model.models_dir", {"metavar": "DIRS", "help": "':'-separated mirror directories of model files"}),
    ("--threshold", "detect.threshold", {"metavar": "SCORE", "type": float, "help": "minimum detection score"}),
    ("--allow", "detect.allow", {"metavar": "LABELS", "type": lambda s: [x for x in s.split(",") if x],
                                 "help": "labels to keep, comma-separated"}),
    ("--deny", "detect.deny", {"metavar": "LABELS", "type": lambda s: [x for x in s.split(",") if x],
                               "help": "labels to drop, comma-separated"}),
    ("--max-detections", "detect.max_detections", {"metavar": "N", "type": int,
                                                   "help": "most detections kept per frame (default 20)"}),
    ("--host", "http.host", {"metavar": "ADDRESS", "help": "address to serve on (default 127.0.0.1)"}),
    ("--port", "http.port", {"metavar": "PORT", "type": int, "help": "port to serve on (default 8080)"}),
    ("--token", "http.token", {"metavar": "TOKEN", "help": "access token viewers must present (required off "
                                                         "loopback); --token-file or EDGEDETECT_TOKEN keep it "
                                                         "out of the process list"}),
    ("--stats-interval", "stats.interval", {"metavar": "SECONDS", "type": float, "help": "seconds between stats lines"}),
    ("--sysfs-root", "stats.sysfs_root", {"metavar": "DIR", "help": "sysfs root for temperature and throttling"}),
    ("--procfs-root", "stats.procfs_root", {"metavar": "DIR", "help": "procfs root for CMA memory (meminfo)"}),
]


def add_config_flags(p: argparse.ArgumentParser, only: frozenset[str] | None = None) -> None:
    """The config flags, or of them `only` those a command uses (doctor has no use for --loop)."""
    p.add_argument("--config", "-c", metavar="FILE",
                   help="TOML config (default /etc/edgedetect/edgedetect.toml if present)")
    for flag, key, kw in CONFIG_FLAGS:
        if only is None or flag in only:
            p.add_argument(flag, dest=key.replace(".", "__"), default=None, **kw)
    p.add_argument("--token-file", metavar="FILE", help="read the access token from FILE (its first line); "
                   "EDGEDETECT_TOKEN in the environment works too")


TOKEN_ENV = "EDGEDETECT_TOKEN"


def read_token_file(path: str) -> str:
    """The token in `path`: its text without surrounding blanks and line ends."""
    where = f"--token-file {shorten(path)}"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(4097)
    except FileNotFoundError:
        raise UserError(f"{where}: file not found") from None
    except UnicodeDecodeError:
        raise UserError(f"{where}: not UTF-8 text, expected the token on one line") from None
    except OSError as e:
        raise UserError(f"{where}: cannot read it ({e.strerror or e})") from None
    token = text.strip()
    if not token:
        raise UserError(f"{where}: the file is empty, expected the token on its first line")
    if len(text) > 4096 or any(c.isspace() for c in token):
        raise UserError(f"{where}: expected one token on one line, found more")
    return token


def token_override(args: argparse.Namespace) -> str | None:
    """The token from --token, --token-file or EDGEDETECT_TOKEN, in that order; None: the config's."""
    flag = getattr(args, "http__token", None)
    file = getattr(args, "token_file", None)
    if flag is not None and file:
        raise UserError("--token and --token-file both given: give one of them")
    if file:
        return read_token_file(file)
    if flag is None and os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip()
    return flag


def config_from_args(args: argparse.Namespace):
    from edgedetect import config

    overrides = {key: getattr(args, key.replace(".", "__"), None) for _, key, _ in CONFIG_FLAGS}
    overrides["http.token"] = token_override(args)
    return config.load(args.config, overrides)


# SIGTERM, SIGINT and SIGHUP from the start of main() until a command takes them over: building
# the parser alone imports the tools' modules (OpenCV, numpy) and takes most of a second.
HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class HeldSignals:
    """Records the held signals; `release()` gives back the handlers there were and delivers
    what came meanwhile, `take()` hands what came to the command that installs its own."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in HELD_SIGNALS:
                self._previous[sig] = signal.signal(sig, lambda signum, _frame: self.received.append(signum))

    def take(self) -> list[int]:
        self._previous.clear()
        got, self.received = self.received, []
        return got

    def release(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        for sig in self.take():
            signal.raise_signal(sig)


def cmd_run(args: argparse.Namespace) -> int:
    # The signal handlers come first: the imports, the config and the model load take seconds,
    # and a SIGTERM (or SIGHUP) in that time would otherwise end the process by the default action.
    log = logging.getLogger("edgedetect")
    stop = threading.Event()
    reload = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: Any) -> None:
        log.info("received SIGHUP: reading the config again")
        reload.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    held: HeldSignals | None = getattr(args, "held_signals", None)
    for sig in held.take() if held else ():  # received while the command line was read
        (on_hup if sig == signal.SIGHUP else on_signal)(sig, None)

    cfg = config_from_args(args)
    if cfg.http.enabled:  # an address that is none is said before anything slow (and before tokens)
        from edgedetect.hosts import check_host

        check_host(cfg.http.host)
    from edgedetect.daemon import Daemon
    from edgedetect.system.memtune import limit_malloc_arenas

    limit_malloc_arenas()
    if stop.is_set():
        log.info("stopped before start-up")
        return 0
    daemon = Daemon(cfg)
    daemon.reload_requested = reload  # a SIGHUP during start-up is applied once running
    daemon.reload_config = lambda: config_from_args(args)
    return daemon.run_until(stop)


def cmd_config(args: argparse.Namespace) -> int:
    from edgedetect.config import to_toml

    sys.stdout.write(to_toml(config_from_args(args)))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from edgedetect.detect.catalogue import Catalogue

    cat = Catalogue.load(args.models_dir)
    if args.action == "list":
        for e in cat.entries.values():
            local = all(cat.find(e, f) for f in e.files)
            mark = "*" if e.default else " "
            print(f"{mark} {e.name:24} {e.kind:10} {'local' if local else 'remote':6}  {e.description}")
        print(f"cache: {cat.cache}")
        return 0
    if not args.name:
        raise UserError(f"models {args.action}: expected a NAME")
    if args.action == "pull":
        got = cat.pull(args.name)
        for role, path in got.paths.items():
            print(f"{role}: {path}")
        return 0
    from pathlib import Path

    from edgedetect.detect.describe import describe_model

    entry = cat.entries.get(args.name)
    if entry is not None and entry.file("model") is None:
        models = ", ".join(n for n, e in cat.entries.items() if e.file("model") is not None)
        raise UserError(f"models info {args.name}: {args.name!r} is a {entry.kind} ({entry.description}), not a "
                        f"model; expected one of: {models}, or a .tflite path")
    path = cat.pull(args.name).paths["model"] if entry is not None else Path(args.name)
    print("\n".join(describe_model(path).lines()))
    return 0


Registrar = Callable[[Any], None]


def _optional_commands() -> list[Registrar]:
    """Sub-commands that live in their own modules, each with a `register(subparsers)`."""
    found = []
    for module in ("edgedetect.bench", "edgedetect.doctor", "edgedetect.quantize.cli", "edgedetect.evaluate.command"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                continue
            raise
        found.append(mod.register)
    return found


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgedetect", description="Object detection on a Raspberry Pi camera.")
    p.add_argument("--version", action="version", version=f"edgedetect {__version__}")
    p.add_argument("--debug", action="store_true", help="debug logging, tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the detection daemon")
    add_config_flags(run)
    run.set_defaults(func=cmd_run)

    cfg = sub.add_parser("config", help="print the effective config (file + flags) as TOML")
    add_config_flags(cfg)
    cfg.set_defaults(func=cmd_config)

    models = sub.add_parser("models", help="list, pull or inspect models")
    models.add_argument("action", choices=["list", "pull", "info"])
    models.add_argument("name", nargs="?", help="catalogue name (or a .tflite path for info)")
    models.add_argument("--models-dir", help="':'-separated mirror directories searched first")
    models.set_defaults(func=cmd_models)

    for register in _optional_commands():
        register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    held = HeldSignals()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except BaseException:
        held.release()
        raise
    from edgedetect.system.logs import setup_logging

    setup_logging(args.debug)
    if args.func is cmd_run:
        args.held_signals = held
    else:
        held.release()
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        if args.debug:
            raise
        print(f"edgedetect: error: {shorten(str(e))}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        # A path the user gave that the system refuses (a name over 255 bytes, a file where a
        # directory should be ...) is that user's error: one line, not a traceback.
        if args.debug or e.filename is None:
            raise
        print(f"edgedetect: error: {shorten(f'{e.filename}: {e.strerror or e}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
