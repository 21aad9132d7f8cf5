"""``python -m dmeta_embed.cli``: the same as the ``dmeta-embed`` command."""

from . import main

main()
