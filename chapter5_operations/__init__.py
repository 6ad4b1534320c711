"""Chapter 5: operations."""
