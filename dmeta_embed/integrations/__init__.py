"""Thin adapters from frameworks users already use to ``Embedder``; each module imports its
framework when it is imported itself, with the ``pip install`` line when it is missing."""
