"""The simulated printer: models of the hardware that printhost drives, for laptops and tests."""
