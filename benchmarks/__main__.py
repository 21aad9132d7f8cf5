"""``python -m benchmarks ...``: the benchmark, from a source checkout (see benchmarks/cli.py)."""

from .cli import main

if __name__ == "__main__":
    main()
