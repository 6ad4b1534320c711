"""Model builders: every model the patterns serve is trained here, deterministically, from bundled data."""
