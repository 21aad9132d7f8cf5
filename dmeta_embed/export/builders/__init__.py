"""One builder per variant, behind one registry: adding a variant is one module with a
:class:`~.base.Builder` and one entry in :data:`BUILDERS` (plus its ``Precision`` and file name
in ``manifest.py``)."""

from __future__ import annotations

from ...manifest import Precision
from .base import BaseBuilder, Builder, Candidate
from .bf16 import BF16
from .fp16 import FP16
from .fp32 import FP32
from .int8 import INT8
from .int8_ov import INT8OV

#: every variant the export can build, in the order it builds them
BUILDERS: dict[Precision, Builder] = {b.precision: b for b in (FP32(), FP16(), INT8(), INT8OV(), BF16())}

__all__ = ["BUILDERS", "BaseBuilder", "Builder", "Candidate", "default_variants"]


def default_variants() -> tuple[list[Precision], dict[Precision, str]]:
    """What a plain ``export`` builds: every variant ``auto`` can choose whose engine is
    installed here, and, for the rest, why each is skipped."""
    chosen, skipped = [], {}
    for precision, builder in BUILDERS.items():
        why = builder.unavailable()
        if why is None:
            chosen.append(precision)
        else:
            skipped[precision] = why
    return chosen, skipped
