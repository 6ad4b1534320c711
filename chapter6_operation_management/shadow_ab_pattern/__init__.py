"""Shadow A/B pattern: every request answered by model A, a copy sent to model B, both predictions recorded."""
