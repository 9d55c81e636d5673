"""Output files that a failed run never destroys: written beside the target, renamed onto it when done.

``tapwatch detect -o``, ``flows -o`` and ``score -o`` write a new result per run. A run refused before it read
anything (a missing, empty or non-capture input, a bad option) must leave an earlier result as it was, and a
run that dies half-way must leave no partial file; a run that ends, even with exit 2 after the readable part of
a truncated input, replaces the earlier result. :func:`replaced_when_done` gives that: the rename is atomic
(same folder, same file system), so a reader sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tapwatch.features.errors import BadInputError


@contextmanager
def replaced_when_done(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it when the block ends without an exception (an empty
    file when nothing was written), removed when it raises (``KeyboardInterrupt`` included). A ``path`` that
    exists and is no regular file (``/dev/null``, a FIFO) is written in place. A directory, or a path whose folder
    does not exist, raises :class:`BadInputError` before anything is written.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "alerts.jsonl"
    >>> _ = out.write_text("earlier result\\n")
    >>> try:
    ...     with replaced_when_done(out) as tmp:
    ...         _ = tmp.write_text("half")
    ...         raise ValueError("the input broke")
    ... except ValueError:
    ...     pass
    >>> out.read_text(), sorted(p.name for p in out.parent.iterdir())
    ('earlier result\\n', ['alerts.jsonl'])
    >>> with replaced_when_done(out) as tmp:
    ...     _ = tmp.write_text("new result\\n")
    >>> out.read_text()
    'new result\\n'
    """
    target = Path(path).resolve()  # through a symlink: the rename replaces the file it points to, not the link
    if target.is_dir():
        raise BadInputError(str(path), "is a directory; give a file name for the output")
    if not target.parent.is_dir():
        raise BadInputError(str(path), f"the folder {target.parent} does not exist")
    if target.exists() and not target.is_file():
        # /dev/null, a FIFO, a terminal: renaming onto them would replace the device node itself; write in place.
        yield target
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.touch(exist_ok=True)
    if target.exists():
        os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))  # the new result keeps the old file's permissions
    os.replace(tmp, target)
