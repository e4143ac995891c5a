"""Devices wired to the Pi itself rather than to the printer's MCU.

Some parts of a printer are easier to hang off the Pi's header than off the MCU board:
an enclosure fan, the relay that switches the printer's power supply, a status LED, an
emergency-stop button, a filament runout switch. `gpio` drives them through gpiozero,
whose mock pin factory lets the tests run them without a Pi.
"""
