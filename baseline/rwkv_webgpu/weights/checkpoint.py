"""One view of any checkpoint file: official names, official PyTorch shapes, lazy loading."""

from __future__ import annotations

import logging
import os
from types import TracebackType

import numpy as np

from ..errors import CheckpointError, RWKVError
from ._arrays import RawReader, materialize
from .names import Layout, WebRwkvNames, detect_layout, is_transposed, swap_last2
from .pth import PthReader, is_pth
from .safetensors_io import SafetensorsReader, is_safetensors

log = logging.getLogger(__name__)


class Checkpoint:
    """An open checkpoint. Use as a context manager or call :meth:`close`.

    Names and shapes are those of the official RWKV-LM ``.pth`` whatever the file format;
    a web-rwkv ``.st`` is renamed and its transposed tensors are swapped back on load.
    """

    def __init__(self, reader: RawReader, layout: Layout) -> None:
        self._reader = reader
        self.path: str = reader.path
        self.layout = layout
        raw_names = reader.names()
        if layout is Layout.WEB_RWKV:
            official_of = WebRwkvNames(raw_names).official_of
            self._raw = {official_of[n]: (n, is_transposed(n)) for n in raw_names}
        else:
            self._raw = {n: (n, False) for n in raw_names}

    def __enter__(self) -> Checkpoint:  # noqa: PYI034 - not meant to be subclassed
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def __len__(self) -> int:
        return len(self._raw)

    def names(self) -> list[str]:
        """Official tensor names, in file order."""
        return list(self._raw)

    def _lookup(self, name: str) -> tuple[str, bool]:
        try:
            return self._raw[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor {name!r}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        """Official PyTorch shape (outermost first)."""
        raw, transposed = self._lookup(name)
        shape = self._reader.info(raw).shape
        return swap_last2(shape) if transposed else shape

    def dtype(self, name: str) -> str:
        """Stored dtype tag: "bf16", "f16", "f32", ... (what :meth:`load` converts from)."""
        return self._reader.info(self._lookup(name)[0]).dtype

    def load(self, name: str, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Read one tensor as a new C-contiguous array of ``dtype`` in its official shape."""
        raw, transposed = self._lookup(name)
        try:
            view = self._reader.view(raw)
            if transposed and view.ndim >= 2:
                view = view.swapaxes(-1, -2)
            return materialize(view, self._reader.info(raw).dtype, dtype)
        except RWKVError:
            raise
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{self.path}: cannot read tensor {name!r} ({e})") from e

    def close(self) -> None:
        self._reader.close()


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open a ``.pth`` (torch zip) or ``.safetensors``/``.st`` file, chosen by content."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no such file: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        size = os.path.getsize(path)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    if is_pth(head):
        return Checkpoint(PthReader(path), Layout.OFFICIAL)
    if is_safetensors(head, size):
        reader = SafetensorsReader(path)
        try:
            shapes = {n: reader.info(n).shape for n in reader.names()}
            suffix = os.path.splitext(path)[1].lower()
            layout = detect_layout(shapes, suffix, reader.metadata)
            log.debug("%s: safetensors with %s names", path, layout.value)
            return Checkpoint(reader, layout)
        except BaseException:
            reader.close()
            raise
    if head.startswith(b"\x80"):
        raise CheckpointError(
            f"{path}: legacy (pre-1.6, non-zip) torch format is not supported; "
            "re-save it with a current torch.save"
        )
    raise CheckpointError(f"{path}: not a checkpoint (neither a torch zip nor safetensors)")
