"""Benchmark harness: every dmeta-embed variant beside the tools users would otherwise pick.

Kept out of ``dmeta_embed`` so the runtime stays light. ``dmeta-embed bench`` (and
``python -m benchmarks``) drive :func:`benchmarks.run.run_benchmark`; each system is measured in
its own subprocess (``benchmarks.worker``) so peak RSS and cold-start time are its own.
"""
