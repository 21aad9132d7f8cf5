"""Export progress: one line per stage with its time, and third-party chatter kept out of the way.

An export of a BERT-base takes minutes on a small CPU; the user sees which stage runs and how long
each took (``dmeta_embed.export`` INFO lines, shown by ``dmeta-embed export``). The quantizers,
the exporters and the optimizers of onnxruntime, torch, transformers and NNCF print warnings that
say nothing actionable about our graphs (onnxruntime's quantizer alone asks to "run
pre-processing before quantization" once per trial); :func:`quiet_third_party` drops them for the
duration of an export.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator

log = logging.getLogger("dmeta_embed.export")

#: loggers whose records below ERROR are dropped during an export
THIRD_PARTY = ("onnxruntime", "nncf", "openvino", "torch", "transformers", "huggingface_hub", "onnxscript")
#: source paths of code that logs straight to the root logger (onnxruntime.quantization does)
ROOT_LOGGING_FROM = ("onnxruntime/quantization", "onnxruntime/transformers")


class _DropThirdParty(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        path = record.pathname.replace("\\", "/")
        return not any(part in path for part in ROOT_LOGGING_FROM)


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Silence third-party warnings and info logs (not errors) inside the block."""
    root = logging.getLogger()
    drop = _DropThirdParty()
    root.addFilter(drop)
    saved = {}
    for name in THIRD_PARTY:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(drop)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def stage(what: str) -> Iterator[None]:
    """Log ``what`` when it starts and its wall time when it ends."""
    log.info("%s ...", what)
    t = time.perf_counter()
    yield
    log.info("%s: done in %.1f s", what.split(" (")[0], time.perf_counter() - t)
