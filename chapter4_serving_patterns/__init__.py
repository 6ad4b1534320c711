"""Chapter 4: serving patterns."""
