"""printhost: a print host for 3D printers running on the printer's own computer."""

__version__ = "0.1.0"
