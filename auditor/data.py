"""Finding, reading and decoding the labelled images (no TensorFlow here).

A data set is either a class-per-folder directory (``DATA/<class>/**/<image>``) or a CSV file with
``path,label`` columns, paths relative to the CSV. Files that cannot be used are never fatal: they
are skipped, counted and listed in the report with the reason. Only a data set with no readable
image at all is an input error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import input_error

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})

cv2.setNumThreads(1)  # decoding runs in our own worker threads; OpenCV's pool would oversubscribe


@dataclass(frozen=True)
class Sample:
    """One labelled image file: ``rel`` is its path relative to the data root (POSIX style)."""

    path: Path
    rel: str
    label: str


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why."""

    rel: str
    reason: str

    def to_dict(self) -> dict:
        return {"path": self.rel, "reason": self.reason}


@dataclass(frozen=True)
class DatasetIndex:
    """What discovery found: the candidate samples and the files skipped on sight."""

    root: Path
    source: str  # "folders" or "csv"
    samples: tuple[Sample, ...]
    skipped: tuple[Skipped, ...]
    labels: tuple[str, ...]  # every label seen (folder names, or CSV labels), sorted
    empty_labels: tuple[str, ...]  # class folders without a single image file

    def counts(self) -> dict[str, int]:
        c = Counter(s.label for s in self.samples)
        return {name: c.get(name, 0) for name in self.labels}


class DecodeError(Exception):
    """An image file whose bytes cannot be turned into an image; the message is the reason."""


def discover(data_path: Path) -> DatasetIndex:
    """Index a class-per-folder directory or a ``path,label`` CSV file.

    Raises :class:`~auditor.errors.InputError` when ``data_path`` does not exist, is neither a
    directory nor a CSV file, or holds no class at all.
    """
    data_path = Path(data_path)
    if not data_path.exists():
        raise input_error(data_path, "no such file or directory", expected="a class-per-folder directory or a CSV file")
    if data_path.is_dir():
        return _discover_folders(data_path)
    if data_path.suffix.lower() == ".csv":
        return _discover_csv(data_path)
    raise input_error(
        data_path,
        "not a directory or a .csv file",
        expected="a class-per-folder directory or a CSV file with path,label columns",
    )


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def _classify_file(name: str) -> str | None:
    """None for an image candidate, else the reason to skip it."""
    if _is_hidden(name):
        return "hidden file"
    ext = os.path.splitext(name)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        return f"unknown extension {ext!r}" if ext else "no file extension"
    return None


def _discover_folders(root: Path) -> DatasetIndex:
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    labels: list[str] = []
    empty: list[str] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=True):
            if _is_hidden(entry.name):
                continue  # .git, .ipynb_checkpoints, __MACOSX: not classes
            labels.append(entry.name)
            n_before = len(samples)
            visited: set[tuple[int, int]] = set()
            for dirpath, dirnames, filenames in os.walk(entry.path, followlinks=True):
                st = os.stat(dirpath)
                if (st.st_dev, st.st_ino) in visited:  # a symbolic-link loop: seen this folder already
                    dirnames[:] = []
                    continue
                visited.add((st.st_dev, st.st_ino))
                dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
                for name in sorted(filenames):
                    full = Path(dirpath) / name
                    rel = full.relative_to(root).as_posix()
                    reason = _classify_file(name)
                    if reason:
                        skipped.append(Skipped(rel, reason))
                    else:
                        samples.append(Sample(full, rel, entry.name))
            if len(samples) == n_before:
                empty.append(entry.name)
        elif entry.is_file():
            skipped.append(
                Skipped(
                    entry.name, _classify_file(entry.name) if _is_hidden(entry.name) else "not inside a class folder"
                )
            )
    if not labels:
        raise input_error(
            root, "has no class sub-folders", expected="one sub-folder per class, e.g. DATA/neutrophil/*.jpg"
        )
    return DatasetIndex(root, "folders", tuple(samples), tuple(skipped), tuple(labels), tuple(empty))


def _discover_csv(csv_path: Path) -> DatasetIndex:
    root = csv_path.parent
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "path" not in fields or "label" not in fields:
                raise input_error(
                    csv_path,
                    f"has columns {reader.fieldnames or []}",
                    expected="a header with 'path' and 'label' columns",
                )
            reader.fieldnames = fields
            for line_no, row in enumerate(reader, start=2):
                rel = (row.get("path") or "").strip()
                label = (row.get("label") or "").strip()
                if not rel or not label:
                    skipped.append(Skipped(f"{csv_path.name}:{line_no}", "row without path or label"))
                    continue
                full = root / rel
                reason = _classify_file(Path(rel).name)
                if reason:
                    skipped.append(Skipped(rel, reason))
                elif not full.is_file():
                    skipped.append(Skipped(rel, "file not found"))
                else:
                    samples.append(Sample(full, Path(rel).as_posix(), label))
    except UnicodeDecodeError:
        raise input_error(csv_path, "is not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise input_error(csv_path, f"is not a valid CSV file ({exc})") from None
    labels = tuple(sorted({s.label for s in samples}))
    if not labels:
        raise input_error(csv_path, "lists no existing image file", expected="rows of path,label")
    return DatasetIndex(root, "csv", tuple(samples), tuple(skipped), labels, ())


# ----------------------------------------------------------------------------------- decoding


def decode_image(data: bytes, name: str = "", decoder="cv2") -> np.ndarray:
    """Decode image bytes to an 8-bit RGB array of shape (h, w, 3).

    Grayscale, RGBA (alpha dropped, as Keras's loader does), palette and 16-bit images are
    converted. Raises :class:`DecodeError` with a short reason for empty, truncated or non-image data.

    ``decoder`` says whose pixels to produce: ``"cv2"`` (OpenCV), ``"pil"`` (PIL, then ``convert("RGB")``
    as ``keras.utils.load_img``), or a callable ``bytes -> uint8 RGB array`` used for JPEG files only
    (:func:`auditor.model.decode_tf`: JPEG is where TensorFlow's decoder gives other pixels).
    """
    if not data:
        raise DecodeError("empty file")
    ext = os.path.splitext(name)[1].lower()
    head = data[:8]
    is_jpeg = head[:3] == b"\xff\xd8\xff"
    sos = data.rfind(b"\xff\xda")
    if is_jpeg and (sos < 0 or data.rfind(b"\xff\xd9") < sos):
        # No end-of-image marker after the last start-of-scan: the file was cut. libjpeg silently fills
        # the rest with grey; Keras's loader rejects it, and so do we. (Entropy-coded data cannot hold
        # FFD9, and an EXIF thumbnail's end marker comes before the main scan.)
        raise DecodeError("truncated JPEG (no end-of-image marker)")
    if head == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data:
        raise DecodeError("truncated PNG (no IEND chunk)")
    if decoder == "pil":
        return _decode_pil(data, ext, is_jpeg)
    if callable(decoder) and is_jpeg:
        try:
            img = np.asarray(decoder(data))
        except Exception:
            raise DecodeError("not a readable image (could not be decoded)") from None
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.size == 0:
            raise DecodeError(f"unsupported image layout {img.shape}")
        return img
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        if ext in (".jpg", ".jpeg") and not is_jpeg:
            raise DecodeError(f"not an image: {ext} name but no JPEG signature")
        raise DecodeError("not a readable image (could not be decoded)")
    return to_rgb8(img)


def _decode_pil(data: bytes, ext: str, is_jpeg: bool) -> np.ndarray:
    """PIL's pixels, as ``keras.utils.load_img(color_mode='rgb')`` produces them."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            out = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except UnidentifiedImageError:
        if ext in (".jpg", ".jpeg") and not is_jpeg:
            raise DecodeError(f"not an image: {ext} name but no JPEG signature") from None
        raise DecodeError("not a readable image (could not be decoded)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DecodeError(f"not a readable image ({' '.join(str(exc).split())[:80]})") from None
    if out.ndim != 3 or out.shape[2] != 3 or out.size == 0:
        raise DecodeError(f"unsupported image layout {out.shape}")
    return out


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Convert an OpenCV-decoded array (gray, BGR, BGRA; 8/16-bit or float) to uint8 RGB."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        scale = 255.0 if float(np.nanmax(img)) <= 1.0 else 1.0
        img = np.clip(np.nan_to_num(img) * scale, 0, 255).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        if img.dtype == np.uint8 and img.flags.writeable and img.flags.c_contiguous:
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: the decoded array is ours
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    raise DecodeError(f"unsupported image layout {img.shape}")


@dataclass
class LoadedImage:
    """The outcome of reading one sample: an image or the reason it could not be used."""

    index: int
    sha256: str
    image: np.ndarray | None = None
    error: str | None = None


def load_sample(
    index: int, sample: Sample, decoder="cv2", transform: Callable[[np.ndarray], np.ndarray] | None = None
) -> LoadedImage:
    """Read, hash and decode one file (``decoder`` as in :func:`decode_image`), then apply ``transform`` to
    the image, when given.

    Never raises for a bad file: the error is returned. ``transform``'s own errors propagate.
    """
    try:
        with open(sample.path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return LoadedImage(index, "", error=f"cannot be read ({exc.strerror or exc})")
    digest = hashlib.sha256(data).hexdigest()
    try:
        image = decode_image(data, sample.path.name, decoder)
    except DecodeError as exc:
        return LoadedImage(index, digest, error=str(exc))
    return LoadedImage(index, digest, image=transform(image) if transform is not None else image)


@dataclass
class Batch:
    """Decoded images of one batch (sizes may differ) and their positions in the sample list."""

    indices: list[int]
    images: list[np.ndarray]
    failed: list[LoadedImage] = field(default_factory=list)
    hashes: dict[int, str] = field(default_factory=dict)


def iter_batches(
    samples: Sequence[Sample],
    batch_size: int,
    *,
    workers: int = 2,
    prefetch_batches: int = 2,
    decoder="cv2",
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[Batch]:
    """Decode ``samples`` in worker threads and yield batches of ``batch_size`` good images.

    Decoding runs ahead of the consumer by at most ``prefetch_batches`` batches, so memory holds a
    bounded number of decoded images whatever the data set size, and the next batches are decoded
    while the consumer works on this one. ``transform`` (e.g. resize + scale to the model's input)
    runs in the worker threads right after decoding, so it too overlaps with the consumer, and the
    full-size decoded image is dropped at once. Files that fail to decode are reported in the
    ``failed`` list of the batch in which they were met.
    """
    window = max(1, batch_size * (prefetch_batches + 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wbc-decode") as pool:
        pending = []
        next_i = 0
        batch = Batch([], [])
        while next_i < len(samples) or pending:
            while next_i < len(samples) and len(pending) < window:
                pending.append(pool.submit(load_sample, next_i, samples[next_i], decoder, transform))
                next_i += 1
            loaded: LoadedImage = pending.pop(0).result()
            batch.hashes[loaded.index] = loaded.sha256
            if loaded.image is None:
                batch.failed.append(loaded)
            else:
                batch.indices.append(loaded.index)
                batch.images.append(loaded.image)
            if len(batch.indices) == batch_size:
                yield batch
                batch = Batch([], [])
        if batch.indices or batch.failed:
            yield batch


def fingerprint(entries: Sequence[tuple[str, str, str]]) -> str:
    """SHA-256 over sorted ``(relative path, label, content sha256)`` triples: the data set's identity."""
    h = hashlib.sha256()
    for rel, label, digest in sorted(entries):
        h.update(f"{rel}\t{label}\t{digest}\n".encode())
    return h.hexdigest()


def stratified_subsample(labels: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Indices of a class-stratified random subsample of about ``n`` items (sorted).

    Each class gets a share proportional to its size, at least one item when it has any.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    out = []
    classes, counts = np.unique(labels, return_counts=True)
    for cls, cnt in zip(classes, counts):
        take = max(1, int(round(n * cnt / len(labels))))
        idx = np.flatnonzero(labels == cls)
        out.append(rng.choice(idx, size=min(take, cnt), replace=False))
    return np.sort(np.concatenate(out))


def thumbnail(path: Path, size: int = 128) -> np.ndarray | None:
    """A decoded RGB image scaled so its longer side is ``size`` (for galleries), or None."""
    try:
        img = decode_image(Path(path).read_bytes(), Path(path).name)
    except (OSError, DecodeError):
        return None
    h, w = img.shape[:2]
    scale = size / max(h, w)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
