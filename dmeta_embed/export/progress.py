"""Export progress: one line per stage with its time, and third-party chatter kept out of the way.

An export of a BERT-base takes minutes on a small CPU; the user sees which stage runs and how long
each took (``dmeta_embed.export`` INFO lines, shown by ``dmeta-embed export``); a stage made of
steps (the int8 searches, the speed runs) logs each step with the time left (:class:`Progress`).
The quantizers,
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


class Progress:
    """Steps of one long stage, each logged with the time so far and an estimate of the time left
    (from the mean step so far). ``total`` may be an upper bound (a search that can stop early):
    the line then says "at most"."""

    def __init__(self, what: str, total: int, *, bound: bool = False) -> None:
        self.what, self.total, self.bound = what, max(1, total), bound
        self.done = 0
        self.t0 = time.perf_counter()

    def step(self, note: str = "", *, total: int | None = None) -> None:
        """One step finished (``note`` says what it found); ``total`` revises the step count."""
        self.done += 1
        if total is not None:
            self.total = max(total, self.done)
        spent = time.perf_counter() - self.t0
        left = spent / self.done * max(0, self.total - self.done)
        of = f"{'at most ' if self.bound else ''}{self.total}"
        log.info(
            "%s: %d of %s%s; %.0f s so far, %s%.0f s left",
            self.what,
            self.done,
            of,
            f" ({note})" if note else "",
            spent,
            "at most " if self.bound else "about ",
            left,
        )
