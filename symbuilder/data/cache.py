"""The data cache: derived float32 arrays (split rows, input columns) as .npy files,
beside the export folder, hidden; it can be deleted at any time (it is rebuilt)."""
from __future__ import annotations

import hashlib
import os
import uuid
from typing import TYPE_CHECKING, List, Optional, Set, Tuple

import numpy as np

from .sources import NpyWriter, Table, drop_orphans, release_pages

if TYPE_CHECKING:  # annotations only: spec.model imports data.sources, so no runtime import
    from ..spec.model import Spec


def cache_dir_for(out_dir: str) -> str:
    """Where streamed sources and on-disk splits live: beside the export folder, hidden, as
    the run folder is (`export/.<name>.data/` for `export/<name>`)."""
    parent, base = os.path.split(os.path.abspath(out_dir))
    return os.path.join(parent, f".{base}.data")


def default_cache_dir(spec: Spec) -> str:
    return cache_dir_for(os.path.join("export", spec.name))


GATHER_BYTES = 8 << 20  # rows gathered per chunk when a split is written to disk


class ArrayStore:
    """Derived float32 arrays (split rows, input columns) as .npy files in `folder`, named
    by a hash of what they hold, so an unchanged source and split are gathered once."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.used: Set[str] = set()

    def gather(self, table: Table, flat: np.ndarray, rows: Optional[np.ndarray],
               cols: Optional[List[int]], shape: Tuple[int, ...]) -> np.ndarray:
        """`flat`'s `rows` (sorted ascending; None: all) and `cols` (None: all) as a
        memory-mapped (N, *shape) float32 file, written once."""
        if rows is not None and len(rows) > 1 and np.any(np.diff(rows) < 0):
            raise ValueError("rows must be sorted")
        digest = hashlib.sha256()
        digest.update(repr((table.identity or table.path, flat.shape, shape, cols)).encode())
        digest.update(b"all" if rows is None else np.asarray(rows, dtype=np.int64).tobytes())
        name = digest.hexdigest()[:32] + ".npy"
        path = os.path.join(self.folder, name)
        self.used.add(name)
        if not os.path.exists(path):
            os.makedirs(self.folder, exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            step = max(1, GATHER_BYTES // max(1, flat.shape[1] * 4))
            try:
                # Windows of `step` source rows: what is resident at once (the window's
                # pages, released behind, plus the rows picked from it) stays bounded
                # however sparse `rows` is.
                total = flat.shape[0]
                if rows is not None:
                    bounds = np.searchsorted(rows, np.arange(0, total + step, step))
                with NpyWriter(tmp) as out:
                    for k, start in enumerate(range(0, total, step)):
                        span = flat[start:start + step]
                        if rows is None:
                            block = np.asarray(span if cols is None else span[:, cols])
                        else:
                            pick = rows[bounds[k]:bounds[k + 1]]
                            if not len(pick):
                                continue
                            block = span[pick - start]
                            if cols is not None:
                                block = block[:, cols]
                        out.write(block.reshape((len(block),) + shape))
                        release_pages(span)
                    out.finish_shape(shape)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def drop_unused(self) -> None:
        """Arrays of earlier splits (another seed, fraction or file version) are removed, and
        half-written ones of processes that are gone."""
        if not os.path.isdir(self.folder):
            return
        drop_orphans(self.folder)
        for name in os.listdir(self.folder):
            if name.endswith(".npy") and name not in self.used:
                try:
                    os.unlink(os.path.join(self.folder, name))
                except OSError:
                    pass
