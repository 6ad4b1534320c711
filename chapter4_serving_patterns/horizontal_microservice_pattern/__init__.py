"""Microservice horizontal pattern: a proxy fans each request out in parallel to independent model services."""
