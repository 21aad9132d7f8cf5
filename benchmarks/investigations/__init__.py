"""One-off measurements beside the harness: each answers one question (how the server holds up
under load, what mteb scores each variant gets, ...) and records its answer under
``benchmarks/results/<model>/<cpu class>/``; the answers that settled a design live in
docs/performance.md. They share the harness's measuring primitives (``benchmarks.timing``).

    python -m benchmarks.investigations.<name> --help
"""
