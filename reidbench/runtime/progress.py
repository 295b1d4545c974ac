"""Progress for long work: bars with ETA on a terminal, plain log lines elsewhere (CI, files)."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Optional

Log = Callable[[str], None]


class Progress:
    """`bars=None` decides by whether stderr is a terminal."""

    def __init__(self, log: Log, bars: Optional[bool] = None) -> None:
        self.log = log
        self.bars = sys.stderr.isatty() if bars is None else bars

    @contextlib.contextmanager
    def task(self, total: int, desc: str, unit: str = "it") -> Iterator[Callable[..., None]]:
        """Yield `advance(n=1, **postfix)`: a bar on a terminal; elsewhere nothing (callers log per epoch)."""
        if self.bars:
            from tqdm import tqdm

            with tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True) as bar:
                def advance(n: int = 1, **postfix: object) -> None:
                    bar.update(n)
                    if postfix:
                        bar.set_postfix(postfix, refresh=False)

                yield advance
        else:
            yield lambda n=1, **postfix: None
