"""Talking to a Klipper micro-controller.

printhost drives stock Klipper MCU firmware, so everything in this package has to
agree with that firmware bit for bit: the framing and integer encoding on the wire
(`protocol`) and the data dictionary each firmware build carries, which names every
command and response it understands and the numeric id it was given at build time.
`sim_dictionary` is the dictionary of printhost's own simulated MCU, shaped exactly
like one a real build would produce, so the host code cannot tell the two apart.
"""
