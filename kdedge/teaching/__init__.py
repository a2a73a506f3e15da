"""Teachers and what they teach: the teacher kinds, the towers network, calibrated and gated soft targets, classic baselines."""
