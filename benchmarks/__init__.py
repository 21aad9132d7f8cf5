"""Benchmark harness: every dmeta-embed variant beside the tools users would otherwise pick.

Repository tooling, not part of the installed package: run it from a source checkout as
``python -m benchmarks`` (``benchmarks.cli``), which drives :func:`benchmarks.run.run_benchmark`;
each system is measured in its own subprocess (``benchmarks.worker``) so peak RSS and cold-start
time are its own.
"""
