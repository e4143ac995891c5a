"""The `printhost` command line.

    printhost serve [--config FILE] [--host HOST] [--port PORT] [--state-dir DIR]
    printhost config check FILE
    printhost config import-klipper PRINTER_CFG [-o OUT]
    printhost config show [--config FILE]
    printhost user add NAME --role admin|operator|viewer [--state-dir DIR] [--config FILE]
    printhost user passwd NAME | delete NAME | revoke NAME | list
    printhost user role NAME ROLE | deactivate NAME | activate NAME
    printhost user hash [--config FILE]
    printhost auth rotate-key [--config FILE] [--state-dir DIR]
    printhost batch PRINTER_CONFIG FILE.gcode -o OUT [--dictionary klipper.dict] [--summary FILE]
    printhost discover [--timeout S]
    printhost pid-tune HEATER TEMP [--config FILE] [--write]

Passwords are read from a prompt, or from standard input when it is not a terminal;
never from the command line, where other users could read them in the process list.
"""

from __future__ import annotations

import argparse
import getpass
import os
import stat
import sys
from pathlib import Path

from printhost import __version__
from printhost.config import ConfigError, Settings, describe, load_settings, with_overrides
from printhost.store.atomic import StoreCorrupt

DEFAULT_CONFIG_PATHS = (Path("/etc/printhost/printhost.toml"), Path("config/printhost.toml"))


def _find_config(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    env = os.environ.get("PRINTHOST_CONFIG")
    if env:
        return env
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.is_file():
            return str(candidate)
    return None


def _load(args: argparse.Namespace) -> Settings:
    path = _find_config(getattr(args, "config", None))
    settings = load_settings(path) if path else Settings()
    server: dict = {}
    if getattr(args, "host", None):
        server["host"] = args.host
    if getattr(args, "port", None) is not None:
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port: {args.port} is not a TCP port")
        server["port"] = args.port
    if getattr(args, "state_dir", None):
        server["state_dir"] = args.state_dir
    return with_overrides(settings, server=server) if server else settings


def _read_password(prompt_twice: bool = True) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if prompt_twice and getpass.getpass("Repeat password: ") != first:
            raise ValueError("passwords do not match")
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def _state_store(args: argparse.Namespace):
    return _settings_and_store(args)[1]


def _settings_and_store(args: argparse.Namespace):
    from printhost.preflight import prepare_state_dir
    from printhost.store.db import Store
    settings = _load(args)
    return settings, Store(prepare_state_dir(settings.state_path()))


def _scrypt_params(settings: Settings):
    from printhost.api.auth.passwords import ScryptParams
    a = settings.auth
    return ScryptParams.from_log2(a.password_scrypt_log2_n, a.password_scrypt_r,
                                  a.password_scrypt_p)


def _user_store(args: argparse.Namespace):
    """Settings and store for commands that change users of the "store" backend."""
    settings, store = _settings_and_store(args)
    if settings.auth.backend != "store":
        where = (settings.auth.users_file if settings.auth.backend == "file"
                 else settings.auth.http_url)
        raise ValueError(f"auth.backend is {settings.auth.backend!r}: users are managed in "
                         f"{where}, not by printhost")
    return settings, store


# --------------------------------------------------------------------------- commands

def cmd_serve(args: argparse.Namespace) -> int:
    from printhost.service import serve
    return serve(_load(args))


def serial_device_warning(settings: Settings) -> str | None:
    """With control.backend = "mcu": what is wrong with [mcu] serial on this machine
    now, or None. Not an error of the file: a board that is unplugged or switched off
    has no device until it comes back (the service then reports the printer as not
    ready until it restarts)."""
    if settings.control.backend != "mcu":
        return None
    port = settings.mcu.serial
    hint = ("hint: is the board connected and powered? `ls /dev/serial/by-id/` lists USB "
            "boards; set [mcu] serial to the board's path")
    if not port:
        return f"mcu.serial: not set, so the printer stays offline; {hint}"
    try:
        mode = os.stat(port).st_mode
    except FileNotFoundError:
        return f"mcu.serial: {port} does not exist; {hint}"
    except OSError as exc:
        return f"mcu.serial: {port} cannot be checked ({exc.strerror}); {hint}"
    if not stat.S_ISCHR(mode):
        return f"mcu.serial: {port} is not a serial device (not a character device); {hint}"
    return None


def cmd_config_check(args: argparse.Namespace) -> int:
    """0 for a valid file, also when a warning about the machine is printed (the file
    is right; the device may appear later); 2 for an invalid file."""
    settings = load_settings(args.file)
    print(f"{args.file}: OK ({settings.printer.kinematics}, backend {settings.control.backend})")
    warning = serial_device_warning(settings)
    if warning is not None:
        print(f"printhost: warning: {args.file}: {warning}", file=sys.stderr)
    return 0


def cmd_config_import_klipper(args: argparse.Namespace) -> int:
    from printhost.klipper_import import main_import
    return main_import(args.cfg, args.out)


def cmd_config_show(args: argparse.Namespace) -> int:
    settings = _load(args)
    print(f"# effective settings from {settings.source}")
    for key, value, doc in describe(settings):
        print(f"{key} = {value!r}    # {doc}" if doc else f"{key} = {value!r}")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from printhost.store.setup_codes import discard_file
    from printhost.store.users import add_user, validate_password, validate_username
    validate_username(args.name)
    settings, store = _user_store(args)
    password = _read_password()
    validate_password(password)
    add_user(store, args.name, args.role, password, _scrypt_params(settings))
    # Any user ends first-boot setup: the pending code is gone from the store already.
    discard_file(store.state_dir)
    print(f"user {args.name} added with role {args.role}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    from printhost.store.users import set_password, validate_password
    settings, store = _user_store(args)
    password = _read_password()
    validate_password(password)
    set_password(store, args.name, password, _scrypt_params(settings))
    print(f"password of {args.name} changed; existing tokens are revoked")
    return 0


def cmd_user_delete(args: argparse.Namespace) -> int:
    from printhost.store.users import delete_user
    delete_user(_user_store(args)[1], args.name)
    print(f"user {args.name} deleted")
    return 0


def cmd_user_revoke(args: argparse.Namespace) -> int:
    from printhost.store import accounts
    from printhost.store.users import revoke_tokens
    settings, store = _settings_and_store(args)
    if settings.auth.backend == "store":
        revoke_tokens(store, args.name)
    else:
        # Users of the file and http backends keep their token version in the store.
        accounts.bump_version(store, settings.auth.backend, args.name)
    print(f"all tokens of {args.name} revoked")
    return 0


def cmd_user_role(args: argparse.Namespace) -> int:
    from printhost.store.users import update_user
    update_user(_user_store(args)[1], args.name, role=args.role)
    print(f"{args.name} now has role {args.role}; existing tokens are revoked")
    return 0


def cmd_user_activate(args: argparse.Namespace) -> int:
    from printhost.store.users import update_user
    active = args.sub == "activate"
    update_user(_user_store(args)[1], args.name, active=active)
    print(f"user {args.name} {'activated' if active else 'deactivated; existing tokens are revoked'}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from printhost.store.users import list_users
    for user in list_users(_state_store(args)):
        line = f"{user['username']}\t{user['role']}\t{user.get('created_at', '')}"
        print(line if user.get("active", True) else line + "\tdeactivated")
    return 0


def cmd_user_hash(args: argparse.Namespace) -> int:
    from printhost.api.auth.passwords import hash_password
    from printhost.store.users import validate_password
    settings = _load(args)
    password = _read_password()
    validate_password(password)
    print(hash_password(password, _scrypt_params(settings)))
    return 0


def cmd_auth_rotate_key(args: argparse.Namespace) -> int:
    import datetime
    from printhost.api.auth.secrets import rotate_signing_key
    settings, store = _settings_and_store(args)
    old, new, until = rotate_signing_key(settings, store.state_dir, settings.auth.refresh_ttl_s)
    when = datetime.datetime.fromtimestamp(until, tz=datetime.timezone.utc)
    print(f"new signing key {new}; tokens signed with {old} are accepted until "
          f"{when:%Y-%m-%dT%H:%M:%SZ}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from printhost.batch import main_batch
    return main_batch(args.printer_config, args.gcode, args.out, args.dictionary, args.summary)


def cmd_discover(args: argparse.Namespace) -> int:
    import asyncio
    from printhost.discovery import discover
    found = asyncio.run(discover(args.timeout))
    for item in found:
        where = ", ".join(f"[{a}]:{item['port']}" if ":" in a else f"{a}:{item['port']}"
                          for a in item["addresses"])
        print(f"{item['name']}\t{where}\t{item['txt']}")
    if not found:
        print("no printhost found", file=sys.stderr)
    return 0 if found else 1


PID_TUNE_STEP_S = 0.1
PID_TUNE_HELP = (
    "Tune the PID gains of a heater by relay oscillation on the simulated printer, in this "
    "process and on a simulated clock (it takes seconds, not minutes), and print the "
    "gains in Klipper units with the lines for the config. A real printer is tuned "
    "through the API of its running service: POST /api/v1/heaters/HEATER/pid_tune with "
    "{\"target\": TEMP} as an admin, then POST /api/v1/heaters/HEATER/pid_tune/save.")


def cmd_pid_tune(args: argparse.Namespace) -> int:
    from printhost.control.autotune import AutotuneSession, write_pid_to_config
    from printhost.control.clock import ManualClock
    from printhost.control.heaters import (BED_CHECK_GAIN_TIME_S, EXTRUDER_CHECK_GAIN_TIME_S,
                                           Heater, HeaterFault)
    from printhost.sim.heaters import SimulatedHeaterHardware
    from printhost.sim.thermal import ThermalModel

    settings = _load(args)
    if settings.control.backend != "simulated":
        print("printhost: this config drives a real board; tune it through the running "
              f"service: POST /api/v1/heaters/{args.heater}/pid_tune (admin)", file=sys.stderr)
        return 2
    bodies = {"extruder": (settings.simulation.hotend, EXTRUDER_CHECK_GAIN_TIME_S),
              "heater_bed": (settings.simulation.bed, BED_CHECK_GAIN_TIME_S)}
    if args.heater not in bodies:
        raise ValueError(f"unknown heater {args.heater!r}: extruder or heater_bed")
    config_path = _find_config(getattr(args, "config", None))
    if args.write and not config_path:
        raise ValueError("--write needs a config file (--config FILE)")
    body, gain_time_s = bodies[args.heater]
    clock = ManualClock()
    hardware = SimulatedHeaterHardware(ThermalModel(body, settings.simulation.ambient_c), clock)
    heater = Heater(args.heater, getattr(settings.heaters, args.heater), hardware,
                    check_gain_time_s=gain_time_s)
    session = AutotuneSession(heater, args.temp)
    try:
        while session.running:
            now = clock.advance(PID_TUNE_STEP_S)
            heater.update(now)
            session.tick(now)
    except HeaterFault as exc:
        session.abort(str(exc))
    status = session.get_status()
    result = status["result"]
    if status["state"] != "done" or result is None:
        print(f"printhost: PID tune failed: {status['error']}", file=sys.stderr)
        return 1
    print(f"PID tune of {args.heater} at {args.temp:g} C on the simulated printer: "
          f"Ku {result['ku']:.4f}, Tu {result['tu']:.2f} s, {result['cycles']} cycles "
          f"({status['elapsed']:.0f} simulated s)")
    print(f"Kp {result['pid_kp']:.3f}  Ki {result['pid_ki']:.3f}  Kd {result['pid_kd']:.3f}"
          "  (Klipper units)")
    print(f"\n[heaters.{args.heater}]")
    for key in ("pid_kp", "pid_ki", "pid_kd"):
        print(f"{key} = {result[key]:.3f}")
    if args.write:
        assert config_path is not None
        from printhost.control.autotune import ConfigWriteError
        try:
            write_pid_to_config(config_path, args.heater,
                                {k: result[k] for k in ("pid_kp", "pid_ki", "pid_kd")})
        except ConfigWriteError as exc:
            print(f"printhost: {config_path} not changed: {exc}", file=sys.stderr)
            return 2
        print(f"\nwritten to {config_path}")
    return 0


# --------------------------------------------------------------------------- parser

class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line: the problem and where to read more."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _needs_command(parser: argparse.ArgumentParser, commands: argparse._SubParsersAction):
    """The default action of a command group given no command: name the commands."""
    def run(args: argparse.Namespace) -> int:
        names = list(commands.choices)
        listed = " or ".join(filter(None, (", ".join(names[:-1]), names[-1])))
        print(f"{parser.prog}: missing command: {listed} (see {parser.prog} --help)",
              file=sys.stderr)
        return 2
    return run


def _commands(parser: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction:
    """Sub-commands of `parser`; the group alone names them instead of failing."""
    commands = parser.add_subparsers(dest=dest, metavar="COMMAND")
    parser.set_defaults(func=_needs_command(parser, commands))
    return commands


def _add_state_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config (default: $PRINTHOST_CONFIG, "
                   "/etc/printhost/printhost.toml, then ./config/printhost.toml)")
    p.add_argument("--state-dir", metavar="DIR", help="state directory (overrides server.state_dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="printhost", description="3D printer host")
    parser.add_argument("--version", action="version", version=f"printhost {__version__}")
    sub = _commands(parser, "command")

    p = sub.add_parser("serve", help="run the service (API + control process)")
    _add_state_options(p)
    p.add_argument("--host", help="listen address (overrides server.host)")
    p.add_argument("--port", type=int, help="listen port (overrides server.port)")
    p.set_defaults(func=cmd_serve)

    cfg = _commands(sub.add_parser("config", help="configuration tools"), "sub")
    p = cfg.add_parser("check", help="validate a config file without starting anything")
    p.add_argument("file")
    p.set_defaults(func=cmd_config_check)
    p = cfg.add_parser("import-klipper", help="convert a Klipper printer.cfg into printhost TOML")
    p.add_argument("cfg", metavar="PRINTER_CFG")
    p.add_argument("-o", "--out", metavar="FILE", help="write here instead of standard output")
    p.set_defaults(func=cmd_config_import_klipper)
    p = cfg.add_parser("show", help="print every setting with its effective value")
    _add_state_options(p)
    p.set_defaults(func=cmd_config_show)

    users = _commands(sub.add_parser("user", help="manage users"), "sub")
    p = users.add_parser("add", help="add a user (password from prompt or stdin)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=("admin", "operator", "viewer"))
    _add_state_options(p)
    p.set_defaults(func=cmd_user_add)
    for name, func, text in (("passwd", cmd_user_passwd, "change a password (revokes tokens)"),
                             ("delete", cmd_user_delete, "delete a user"),
                             ("revoke", cmd_user_revoke, "revoke all tokens of a user")):
        p = users.add_parser(name, help=text)
        p.add_argument("name")
        _add_state_options(p)
        p.set_defaults(func=func)
    p = users.add_parser("list", help="list users")
    _add_state_options(p)
    p.set_defaults(func=cmd_user_list)
    p = users.add_parser("role", help="change a user's role (revokes tokens)")
    p.add_argument("name")
    p.add_argument("role", choices=("admin", "operator", "viewer"))
    _add_state_options(p)
    p.set_defaults(func=cmd_user_role)
    for name, text in (("deactivate", "stop a user from logging in (revokes tokens)"),
                       ("activate", "let a deactivated user log in again")):
        p = users.add_parser(name, help=text)
        p.add_argument("name")
        _add_state_options(p)
        p.set_defaults(func=cmd_user_activate)
    p = users.add_parser("hash", help="print a password hash for auth.users_file "
                                      "(password from prompt or stdin)")
    p.add_argument("--config", metavar="FILE", help="TOML config whose scrypt parameters "
                   "to use (default: as for serve)")
    p.set_defaults(func=cmd_user_hash)

    auth = _commands(sub.add_parser("auth", help="authentication keys"), "sub")
    p = auth.add_parser("rotate-key", help="replace the token signing key; tokens signed "
                                           "with the old key stay valid until they expire")
    _add_state_options(p)
    p.set_defaults(func=cmd_auth_rotate_key)

    p = sub.add_parser("batch", help="run a G-code file through the motion pipeline to a "
                                     "Klipper MCU command stream")
    p.add_argument("printer_config", metavar="PRINTER_CONFIG", help="printhost TOML config")
    p.add_argument("gcode", metavar="FILE.gcode")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="message blocks are written here")
    p.add_argument("--dictionary", metavar="klipper.dict",
                   help="encode against this firmware data dictionary (default: the simulated MCU's)")
    p.add_argument("--summary", metavar="FILE", help="write the JSON summary here (default: stdout)")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("pid-tune", help="tune a heater's PID gains on the simulated printer",
                       description=PID_TUNE_HELP)
    p.add_argument("heater", metavar="HEATER", help="extruder or heater_bed")
    p.add_argument("temp", metavar="TEMP", type=float, help="target temperature, C")
    p.add_argument("--config", metavar="FILE", help="TOML config (default: as for serve)")
    p.add_argument("--write", action="store_true",
                   help="also write the gains into the config file's heater table")
    p.set_defaults(func=cmd_pid_tune)

    p = sub.add_parser("discover", help="find printhost instances on the LAN (mDNS)")
    p.add_argument("--timeout", type=float, default=3.0)
    p.set_defaults(func=cmd_discover)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"printhost: configuration error: {exc}", file=sys.stderr)
        return 2
    except StoreCorrupt as exc:
        print(f"printhost: the store is damaged and was not changed ({exc}); restore "
              f"printhost.json from a backup or move it aside to start empty", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, KeyError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        print(f"printhost: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A file or directory the command needs: say which and why, never a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"printhost: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
