"""Chapter 6: operation management."""
