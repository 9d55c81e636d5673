"""The web site nginx serves in the lab: pages with their objects, and downloads, generated at start.

:func:`build_site` writes an index page that references :attr:`SiteSpec.objects` page objects (style
sheets, scripts, images of varied sizes, as a browser would fetch them), a few more pages that reuse some of
them, and ``/files/*.bin`` downloads. Sizes and contents come from a seeded generator, so two runs with the
same seed serve the same bytes. Disk use is the sum of the downloads (about 22.2 MB by default) plus the
objects (at most ``objects`` x 400 KB, about 3 MB by default).

Example
-------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as root:
...     paths = build_site(Path(root), SiteSpec(objects=20, downloads=(10_000,)))
>>> paths[0], len([p for p in paths if p.startswith("/static/")]), paths[-1]
('/index.html', 20, '/files/10k.bin')
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from lab.topo_plan import LabError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PAGES = ("about", "news", "products", "contact", "team")
KINDS = ("css", "js", "png", "png", "jpg")  # images are the most common objects of a page
MAX_DOWNLOAD = 100_000_000  # 100 MB: one download must not eat the disk of a shared machine


@dataclass(frozen=True)
class SiteSpec:
    """What :func:`build_site` writes.

    Parameters
    ----------
    objects
        How many objects the index page references (20..40).
    downloads
        Sizes in bytes of the ``/files/*.bin`` downloads (each at most 100 MB).
    seed
        Seeds the sizes and contents.
    """

    objects: int = 30
    downloads: tuple[int, ...] = (10_000, 200_000, 2_000_000, 20_000_000)
    seed: int = 2017

    def __post_init__(self) -> None:
        if not 20 <= self.objects <= 40:
            raise LabError(f"site objects must be in 20..40, got {self.objects}")
        if not self.downloads or not all(0 < n <= MAX_DOWNLOAD for n in self.downloads):
            raise LabError(f"site downloads must be 1..{MAX_DOWNLOAD} bytes each, got {self.downloads}")


def size_name(size: int) -> str:
    """A download's file name from its size.

    >>> size_name(10_000), size_name(2_000_000), size_name(1234)
    ('10k.bin', '2m.bin', '1234.bin')
    """
    for unit, factor in (("m", 1_000_000), ("k", 1_000)):
        if size % factor == 0:
            return f"{size // factor}{unit}.bin"
    return f"{size}.bin"


def _object_bytes(kind: str, size: int, rng: random.Random) -> bytes:
    """Text-like bytes for css/js, a PNG/JPEG signature and noise for images."""
    if kind in ("css", "js"):
        line = b".c%d{margin:0 auto;padding:4px}\n" if kind == "css" else b"function f%d(a){return a+1;}\n"
        out = b"".join(line % i for i in range(size // 24 + 1))
        return out[:size]
    head = PNG_MAGIC if kind == "png" else b"\xff\xd8\xff\xe0"
    return head + rng.randbytes(max(size - len(head), 0))


def _page(title: str, objects: list[str]) -> str:
    tags = []
    for path in objects:
        if path.endswith(".css"):
            tags.append(f'<link rel="stylesheet" href="{path}">')
        elif path.endswith(".js"):
            tags.append(f'<script src="{path}"></script>')
        else:
            tags.append(f'<img src="{path}" alt="">')
    links = " ".join(f'<a href="/{p}.html">{p}</a>' for p in PAGES)
    body = "\n".join(tags)
    head = f"<!doctype html>\n<html><head><title>{title}</title></head>\n"
    return f"{head}<body><nav>{links}</nav>\n{body}\n</body></html>\n"


def build_site(root: Path, spec: SiteSpec | None = None) -> tuple[str, ...]:
    """Write the site under ``root``; return its URL paths (pages, then objects, then downloads)."""
    spec = spec or SiteSpec()
    rng = random.Random(spec.seed)
    (root / "static").mkdir(parents=True, exist_ok=True)
    (root / "files").mkdir(exist_ok=True)
    objects = []
    for index in range(spec.objects):
        kind = KINDS[index % len(KINDS)]
        size = int(rng.lognormvariate(9.5, 1.2)) % 400_000 + 200  # mostly 2..60 KB, a few hundred KB
        path = f"/static/obj{index:02d}.{kind}"
        (root / path.lstrip("/")).write_bytes(_object_bytes(kind, size, rng))
        objects.append(path)
    (root / "index.html").write_text(_page("office.lab", objects))
    pages = ["/index.html"]
    for name in PAGES:
        (root / f"{name}.html").write_text(_page(name, rng.sample(objects, 5)))
        pages.append(f"/{name}.html")
    downloads = []
    for size in spec.downloads:
        path = f"/files/{size_name(size)}"
        with (root / path.lstrip("/")).open("wb") as fh:
            for start in range(0, size, 1 << 20):  # 1 MB at a time: no 20 MB buffer in memory
                fh.write(rng.randbytes(min(1 << 20, size - start)))
        downloads.append(path)
    return (*pages, *objects, *downloads)
