"""Benchmark a serving pattern against its floors: `make bench P=<pattern dir>`.

run.py runs the whole benchmark and writes build/bench/<pattern>.md; wrk.py drives the load tool (post.lua is
its request script); cpu.py accounts for where the CPU went; echo.py is the FastAPI echo app of the floor,
which docker-compose.yml describes for the runner. hop.py (`python -m mlpatterns.bench.hop`) measures one call
between services, the core client's, beside the fastest client.
"""
