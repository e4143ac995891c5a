"""Turn a Klipper `printer.cfg` into a printhost TOML configuration.

`import_klipper()` reads the Klipper file with Klipper's own rules (described in
`reader`), maps every section and key printhost has a counterpart for onto printhost's
settings, and lists everything else in `ImportResult.unconverted` with the reason. The TOML it
writes is checked with `parse_settings` before it is returned, so a value printhost
would refuse never reaches the output: it is reported and printhost's default stays.

The work is split by concern:

* `reader`: Klipper's config syntax (comments, continuation lines, includes, the
  SAVE_CONFIG block), giving the configuration exactly as Klipper would see it;
* `options`: one section's values, read with Klipper's own checks;
* `converter`, `convert`, `steppers`, `heaters`: the mapping of sections and keys onto
  printhost's settings, each value checked against printhost's limits;
* `pins`: every MCU pin at once (Klipper's pin syntax, one key per pin, what stands
  in for a pin that cannot be imported);
* `render`: the commented TOML;
* `importer`: the whole import, validated with `parse_settings`;
* `command`: `printhost config import-klipper`.
"""

from __future__ import annotations

from printhost.klipper_import.command import main_import
from printhost.klipper_import.errors import KlipperImportError
from printhost.klipper_import.importer import ImportResult, import_klipper
from printhost.klipper_import.reader import KlipperOption, read_klipper_config

__all__ = ["ImportResult", "KlipperImportError", "KlipperOption", "import_klipper",
           "main_import", "read_klipper_config"]
