"""Chapter 2: training."""
