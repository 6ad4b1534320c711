"""`make bench P=chapter4_serving_patterns/prediction_cache_pattern`: a hit beside a bare Redis GET on the same
stack, and a miss (the whole way through pred). The bench is the core's, shared with data_cache:
mlpatterns/bench/item_cache.py says what it measures."""

import sys
from pathlib import Path

from mlpatterns.bench.item_cache import main

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, max_hit_over_get=2.0))  # the performance issue's target
