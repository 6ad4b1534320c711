"""Model-in-image pattern: the model is built into the serving image; a new model is a new image."""
