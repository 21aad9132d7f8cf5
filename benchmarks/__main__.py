"""``python -m benchmarks ...`` is ``dmeta-embed bench ...``."""

from dmeta_embed.cli import bench

if __name__ == "__main__":
    bench(prog_name="python -m benchmarks")
