"""Chapter 3: release patterns."""
