"""Benchmark a serving pattern against its floors: `make bench P=<pattern dir>`.

run.py runs the whole benchmark and writes build/bench/<pattern>.md; wrk.py drives the load tool (post.lua is
its request script); cpu.py accounts for where the CPU went; echo.py is the FastAPI echo app of the floor,
which docker-compose.yml describes for the runner; bare.py is the bare floor (Starlette, orjson, onnxruntime),
which bare_floor/ describes. all.py (`make bench` without P) runs every pattern's bench and sums them up, each
report ending with verdict.py's lines. inprocess.py (`python -m mlpatterns.bench.inprocess`) measures the CPU of
a POST inside the app, without a server; hop.py (`python -m mlpatterns.bench.hop`) one call between services, the
core client's, beside the fastest client; v2.py the open inference protocol's route beside /predict; batching.py
micro-batching on and off; peers/ (`make bench-peers`) web_single beside MLServer, BentoML and Ray Serve.
"""
