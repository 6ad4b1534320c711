"""Prediction log pattern: every prediction is one JSON record, written off the request path and shipped."""
