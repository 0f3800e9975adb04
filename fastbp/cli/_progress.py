"""Training progress on the command line, from the training loop's records (the ``progress``
attribute of the ``fastbp.training`` logger's INFO records, see ``fastbp.training.logger``).

Three ways to show a fit:

- ``"bar"``: one tqdm bar on stderr, redrawn in place: epoch, loss, validation score, elapsed
  time and ETA (the default when stderr is a terminal);
- ``"lines"``: one short line per epoch on stdout (``--verbose``), each under 80 columns;
- ``"none"``: nothing per epoch (``--quiet``, or stderr not a terminal).
"""
import contextlib
import logging
import sys
import textwrap

__all__ = ["choose_mode", "showing_progress"]

LINE_WIDTH = 79


def choose_mode(quiet, verbose):
    """The way to show progress for these flags on this terminal."""
    if quiet:
        return "none"
    if verbose:
        return "lines"
    return "bar" if sys.stderr.isatty() else "none"


def _values(progress, digits):
    parts = [f"{name.replace('_', ' ')} {value:.{digits}f}"
             for name, value in progress["values"].items()]
    if progress.get("validation_score") is not None:
        parts.append(f"validation {progress['validation_score']:.4f}")
    return parts


class _Handler(logging.Handler):
    def __init__(self, label, mode):
        super().__init__()
        self.label, self.mode, self.bar = label, mode, None

    def emit(self, record):
        progress = getattr(record, "progress", None)
        if progress is None:
            return
        if "epoch" in progress:
            self._epoch(progress)
        elif self.mode == "lines":
            text = (f"training path: {progress['fit_path']}" if "fit_path" in progress
                    else f"stopped: {progress['stop']}")
            print(textwrap.fill(f"{self.label.strip()}: {text}", LINE_WIDTH, subsequent_indent="  "))

    def _epoch(self, progress):
        if self.mode == "lines":
            width = len(str(progress["epochs"]))
            text = (f"{self.label} epoch {progress['epoch']:>{width}}/{progress['epochs']}  "
                    + "  ".join(_values(progress, 4)) + f"  {progress['seconds']:.3f} s")
            print(textwrap.fill(text, LINE_WIDTH, subsequent_indent="  "))
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=progress["epochs"], unit="epoch", file=sys.stderr,
                            dynamic_ncols=True, leave=True,
                            bar_format=f"{self.label} epoch {{n_fmt}}/{{total_fmt}} |{{bar}}| "
                                       "{desc} {elapsed}<{remaining}")
        self.bar.set_description_str("  ".join(_values(progress, 4)), refresh=False)
        self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        super().close()


@contextlib.contextmanager
def showing_progress(label, mode):
    """While the block runs, show the training loop's progress records as ``mode`` says (the
    records go to this display only, not to fastbp's default stdout lines)."""
    logger = logging.getLogger("fastbp.training")
    handler = _Handler(label, mode)
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved
        handler.close()
