"""The `printhost` command line.

    printhost serve [--config FILE] [--host HOST] [--port PORT] [--state-dir DIR]
    printhost config check FILE
    printhost config import-klipper PRINTER_CFG [-o OUT]
    printhost config show [--config FILE]
    printhost user add NAME --role admin|operator|viewer [--state-dir DIR] [--config FILE]
    printhost user passwd NAME | delete NAME | revoke NAME | list
    printhost batch PRINTER_CONFIG FILE.gcode -o OUT [--dictionary klipper.dict] [--summary FILE]
    printhost discover [--timeout S]

Passwords are read from a prompt, or from standard input when it is not a terminal;
never from the command line, where other users could read them in the process list.
"""

from __future__ import annotations

import argparse
import getpass
import os
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
    from printhost.service import prepare_state_dir
    from printhost.store.db import Store
    settings = _load(args)
    return Store(prepare_state_dir(settings.state_path()))


# --------------------------------------------------------------------------- commands

def cmd_serve(args: argparse.Namespace) -> int:
    from printhost.service import serve
    return serve(_load(args))


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    print(f"{args.file}: OK ({settings.printer.kinematics}, backend {settings.control.backend})")
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
    from printhost.store.users import add_user, validate_password, validate_username
    validate_username(args.name)
    password = _read_password()
    validate_password(password)
    add_user(_state_store(args), args.name, args.role, password)
    print(f"user {args.name} added with role {args.role}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    from printhost.store.users import set_password, validate_password
    password = _read_password()
    validate_password(password)
    set_password(_state_store(args), args.name, password)
    print(f"password of {args.name} changed; existing tokens are revoked")
    return 0


def cmd_user_delete(args: argparse.Namespace) -> int:
    from printhost.store.users import delete_user
    delete_user(_state_store(args), args.name)
    print(f"user {args.name} deleted")
    return 0


def cmd_user_revoke(args: argparse.Namespace) -> int:
    from printhost.store.users import revoke_tokens
    revoke_tokens(_state_store(args), args.name)
    print(f"all tokens of {args.name} revoked")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from printhost.store.users import list_users
    for user in list_users(_state_store(args)):
        print(f"{user['username']}\t{user['role']}\t{user.get('created_at', '')}")
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


# --------------------------------------------------------------------------- parser

def _add_state_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config (default: $PRINTHOST_CONFIG, "
                   "/etc/printhost/printhost.toml, then ./config/printhost.toml)")
    p.add_argument("--state-dir", metavar="DIR", help="state directory (overrides server.state_dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="printhost", description="3D printer host")
    parser.add_argument("--version", action="version", version=f"printhost {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the service (API + control process)")
    _add_state_options(p)
    p.add_argument("--host", help="listen address (overrides server.host)")
    p.add_argument("--port", type=int, help="listen port (overrides server.port)")
    p.set_defaults(func=cmd_serve)

    cfg = sub.add_parser("config", help="configuration tools").add_subparsers(dest="sub", required=True)
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

    users = sub.add_parser("user", help="manage users").add_subparsers(dest="sub", required=True)
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

    p = sub.add_parser("batch", help="run a G-code file through the motion pipeline to a "
                                     "Klipper MCU command stream")
    p.add_argument("printer_config", metavar="PRINTER_CONFIG", help="printhost TOML config")
    p.add_argument("gcode", metavar="FILE.gcode")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="message blocks are written here")
    p.add_argument("--dictionary", metavar="klipper.dict",
                   help="encode against this firmware data dictionary (default: the simulated MCU's)")
    p.add_argument("--summary", metavar="FILE", help="write the JSON summary here (default: stdout)")
    p.set_defaults(func=cmd_batch)

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
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
