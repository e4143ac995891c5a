"""The simulated Klipper MCU: its firmware logic, its board and its end of the serial line."""
