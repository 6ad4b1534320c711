"""`make bench P=chapter6_operation_management/parameter_based_pattern`: the proxy beside each backend it
asks, asked directly, in one run; the performance issue's target: at most 0.5 ms added to the slowest active
backend's p50. The bench is the core's, shared with horizontal_microservice:
mlpatterns/bench/fan_out.py says what it measures."""

import sys
from pathlib import Path

from mlpatterns.bench.fan_out import main

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, max_added_ms=0.5))
