"""Progress bars for the command line: tqdm's when it is installed, else a plain line.

tqdm is a dependency of the command line only (the ``cli`` extra), so it is imported here, when a
bar is made, never by ``import fastconv``.
"""

from __future__ import annotations

import sys
import time

__all__ = ["progress_bar"]


class PlainProgress:
    """tqdm's interface (update, set_postfix, close, a context manager) on one plain line of
    stderr: rewritten in place on a terminal, otherwise a new line at most every `interval`
    seconds, and always one at the start."""

    def __init__(self, total: int, desc: str, unit: str, scale: bool = False,
                 interval: float = 1.0, file=None):
        self.total, self.desc, self.unit, self.scale = total, desc, unit, scale
        self.n, self.postfix, self.interval = 0, "", interval
        self.file = file or sys.stderr
        self.tty = self.file.isatty()
        self.shown = False
        self.last = -float("inf")
        self._show()

    def _amount(self, n: int) -> str:
        if self.scale:
            return f"{n / 1e6:.1f}"
        return f"{n}"

    def _show(self) -> None:
        unit = f"M{self.unit}" if self.scale else self.unit
        line = f"{self.desc}: {self._amount(self.n)}/{self._amount(self.total)} {unit}"
        if self.postfix:
            line += f" ({self.postfix})"
        self.file.write(f"\r{line}\x1b[K" if self.tty else line + "\n")
        self.file.flush()
        self.shown = True
        self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self._show()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.shown and self.tty:
            self.file.write("\r\x1b[K")
            self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _NoProgress:
    """The bar when progress is off."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, refresh: bool = True, **values) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str = "img", enabled: bool = True,
                 scale: bool = False):
    """A progress bar over `total` `unit`s (bytes shown in MB with `scale`), cleared when it
    closes: tqdm's if tqdm is installed, else ``PlainProgress``; nothing when not `enabled`."""
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return PlainProgress(total, desc, unit, scale)
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, leave=False,
                dynamic_ncols=True)
