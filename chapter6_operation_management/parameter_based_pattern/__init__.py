"""Parameter-based pattern: per-model thresholds and on/off switches, read from the environment, turn a fan-out
to three one-vs-rest models into decisions."""
