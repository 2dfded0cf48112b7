"""The method: its settings, presets, schedule and solvers, the noise contract, the low-pass filter
and the similarities."""
