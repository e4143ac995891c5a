"""`printhost config import-klipper`: run the import and write its result.

Kept apart from the import itself so the library functions never print or touch
files; here the TOML goes to a file (replaced atomically) or standard output and the
report to standard error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from printhost.klipper_import.errors import KlipperImportError, NotAKlipperConfig
from printhost.klipper_import.importer import import_klipper
from printhost.store.atomic import replace_file

__all__ = ["main_import"]


def _write_atomically(target: Path, text: str) -> None:
    """Replace `target` in one step. A configuration file is not a secret: a new one
    gets the usual permissions, a replaced one keeps its own."""
    replace_file(target, text.encode("utf-8"), None)


def main_import(cfg_path: str, out: str | None) -> int:
    """`printhost config import-klipper CFG [-o OUT]`: 0 on success, 2 on a fatal error
    (one line on standard error, nothing written), including a file that is not a
    Klipper config at all.

    The TOML goes to OUT (replaced atomically) or to standard output; the list of what
    was not converted, and the notes, go to standard error.
    """
    if out is not None and Path(out).resolve() == Path(cfg_path).resolve():
        print(f"printhost: refusing to overwrite the Klipper config {cfg_path} with the "
              "import", file=sys.stderr)
        return 2
    try:
        result = import_klipper(Path(cfg_path))
    except NotAKlipperConfig as exc:
        print(f"printhost: {exc}", file=sys.stderr)
        return 2
    except KlipperImportError as exc:
        print(f"printhost: cannot import Klipper config: {exc}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.unconverted:
        print(f"{len(result.unconverted)} item(s) not converted:", file=sys.stderr)
        for item in result.unconverted:
            print(f"  - {item}", file=sys.stderr)
    if out is None:
        sys.stdout.write(result.toml)
        sys.stdout.flush()
        return 0
    try:
        _write_atomically(Path(out), result.toml)
    except OSError as exc:
        print(f"printhost: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} from {cfg_path}", file=sys.stderr)
    return 0
