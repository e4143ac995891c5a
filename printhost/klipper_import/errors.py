"""The one error of the Klipper importer: the file cannot be imported at all.

Kept apart so the reader, the converter and the importer can all raise it without
depending on one another.
"""

from __future__ import annotations

from printhost.config import ConfigError

__all__ = ["KlipperImportError", "NotAKlipperConfig"]


class KlipperImportError(ConfigError):
    """The Klipper file cannot be imported at all (Klipper itself would not start)."""


class NotAKlipperConfig(KlipperImportError):
    """The file is not a Klipper config at all (printhost's own TOML, prose, ...)."""
