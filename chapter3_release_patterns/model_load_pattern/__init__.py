"""Model-load pattern: the serving image carries no model; a loader fetches and verifies it before start."""
