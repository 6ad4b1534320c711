"""`make bench P=chapter4_serving_patterns/horizontal_microservice_pattern`: the proxy beside each
backend it asks, asked directly, in one run; the performance issue's target: its p50 at most 1.2x the slowest
backend's. The bench is the core's, shared with parameter_based: mlpatterns/bench/fan_out.py says what it measures."""

import sys
from pathlib import Path

from mlpatterns.bench.fan_out import main

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, max_ratio=1.2))
