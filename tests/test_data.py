"""Discovery and decoding of the labelled images (auditor/data.py), without TensorFlow.

Every fixture is built in ``tmp_path`` with OpenCV/numpy (and Pillow for palette PNGs). Decoded pixels
are checked against hand values and, where possible, against Pillow as an independent decoder.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from auditor.data import (
    DecodeError,
    Sample,
    decode_image,
    discover,
    fingerprint,
    iter_batches,
    load_sample,
    stratified_subsample,
)
from auditor.errors import EXIT_BAD_INPUT, InputError

# ----------------------------------------------------------------------------------- helpers


def encode(img: np.ndarray, ext: str) -> bytes:
    """Encode a BGR(A)/gray array with OpenCV; ``ext`` like ".png"."""
    ok, buf = cv2.imencode(ext, img)
    assert ok, ext
    return buf.tobytes()


def rgb_patch(h: int = 6, w: int = 5) -> np.ndarray:
    """An RGB image with a distinct known colour at (1, 2) and a different background."""
    img = np.zeros((h, w, 3), np.uint8)
    img[...] = (10, 120, 240)  # R, G, B
    img[1, 2] = (200, 30, 60)
    return img


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_png_rgb(path: Path, rgb: np.ndarray) -> Path:
    return write(path, encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), ".png"))


def sample_of(path: Path, label: str = "x") -> Sample:
    return Sample(path, path.name, label)


def pillow_rgb(data: bytes) -> np.ndarray:
    """Independent reference decoder."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ----------------------------------------------------------------------------------- bad files


def _good_jpeg() -> bytes:
    return encode(cv2.cvtColor(np.full((32, 32, 3), 128, np.uint8), cv2.COLOR_RGB2BGR), ".jpg")


def _good_png() -> bytes:
    rng = np.random.default_rng(0)
    return encode(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), ".png")


def _assert_skipped(path: Path, reason_part: str) -> None:
    loaded = load_sample(7, sample_of(path))
    assert loaded.image is None
    assert loaded.index == 7
    assert isinstance(loaded.error, str) and loaded.error
    assert reason_part in loaded.error
    # the hash is of the bytes on disk, even for a bad file
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # iter_batches reports it as failed and never raises
    batches = list(iter_batches([sample_of(path)], batch_size=4, workers=1))
    assert len(batches) == 1
    assert batches[0].indices == [] and batches[0].images == []
    assert [f.index for f in batches[0].failed] == [0]
    assert reason_part in batches[0].failed[0].error


def test_text_named_jpg_is_skipped(tmp_path):
    p = write(tmp_path / "c" / "notes.jpg", b"this is not an image, just some text\n" * 5)
    _assert_skipped(p, "not an image")


def test_truncated_jpeg_is_skipped(tmp_path):
    data = _good_jpeg()
    assert decode_image(data, "ok.jpg").shape == (32, 32, 3)  # the full file is fine
    p = write(tmp_path / "c" / "cut.jpg", data[: len(data) // 2])
    _assert_skipped(p, "truncated JPEG")


def test_empty_file_is_skipped(tmp_path):
    p = write(tmp_path / "c" / "empty.png", b"")
    _assert_skipped(p, "empty file")


def test_truncated_png_is_skipped(tmp_path):
    data = _good_png()
    assert decode_image(data, "ok.png").shape == (32, 32, 3)
    p = write(tmp_path / "c" / "cut.png", data[: len(data) // 2])
    _assert_skipped(p, "truncated PNG")


def test_unreadable_path_is_skipped_not_raised(tmp_path):
    loaded = load_sample(0, sample_of(tmp_path / "gone.png"))
    assert loaded.image is None and "cannot be read" in loaded.error


def test_decode_image_raises_decode_error_only():
    with pytest.raises(DecodeError, match="empty file"):
        decode_image(b"", "a.png")
    with pytest.raises(DecodeError):
        decode_image(b"\x00" * 100, "a.bmp")


# ----------------------------------------------------------------------------------- formats


def test_grayscale_png_becomes_rgb(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    data = encode(gray, ".png")
    img = decode_image(data, "g.png")
    assert img.dtype == np.uint8 and img.shape == (4, 5, 3)
    assert tuple(img[2, 3]) == (gray[2, 3],) * 3 == (156, 156, 156)
    np.testing.assert_array_equal(img, pillow_rgb(data))


def test_rgba_png_drops_alpha(tmp_path):
    rgb = rgb_patch()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])  # almost transparent: still not blended
    data = encode(cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), ".png")
    img = decode_image(data, "a.png")
    assert img.dtype == np.uint8 and img.shape == (6, 5, 3)
    assert tuple(img[1, 2]) == (200, 30, 60)
    assert tuple(img[0, 0]) == (10, 120, 240)
    np.testing.assert_array_equal(img, rgb)


def test_16bit_png_is_shifted_right_by_8(tmp_path):
    # values chosen so that >>8 differs from rounding (x / 257): 0x12FF -> 18 (rounding gives 19)
    rgb16 = np.zeros((3, 4, 3), np.uint16)
    rgb16[...] = (0x12FF, 0x0080, 0xFFFF)  # R, G, B
    rgb16[2, 1] = (0x0100, 0xABCD, 0x00FF)
    data = encode(cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR), ".png")
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    img = decode_image(data, "deep.png")
    assert img.dtype == np.uint8 and img.shape == (3, 4, 3)
    assert tuple(img[0, 0]) == (0x12, 0x00, 0xFF) == (18, 0, 255)
    assert tuple(img[2, 1]) == (1, 0xAB, 0) == (1, 171, 0)


def test_16bit_grayscale_png(tmp_path):
    g = np.full((2, 2), 0x7F80, np.uint16)
    img = decode_image(encode(g, ".png"), "g16.png")
    assert img.shape == (2, 2, 3) and tuple(img[1, 1]) == (0x7F,) * 3


def test_palette_png_becomes_rgb(tmp_path):
    rgb = rgb_patch(8, 8)
    rgb[5:, :3] = (0, 255, 0)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert pal.mode == "P"
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    data = buf.getvalue()
    assert data[25] == 3  # IHDR colour type 3 = indexed colour
    img = decode_image(data, "p.png")
    assert img.dtype == np.uint8 and img.shape == (8, 8, 3)
    assert tuple(img[1, 2]) == (200, 30, 60)
    assert tuple(img[6, 1]) == (0, 255, 0)
    np.testing.assert_array_equal(img, pillow_rgb(data))


@pytest.mark.parametrize("ext", [".bmp", ".tif", ".tiff"])
def test_bmp_and_tiff_decode_to_rgb(tmp_path, ext):
    rgb = rgb_patch()
    data = encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), ext)
    img = decode_image(data, "x" + ext)
    assert img.dtype == np.uint8 and img.shape == (6, 5, 3)
    assert tuple(img[1, 2]) == (200, 30, 60)  # RGB order, not BGR
    np.testing.assert_array_equal(img, rgb)
    np.testing.assert_array_equal(img, pillow_rgb(data))


def test_jpeg_decodes_in_rgb_order(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[...] = (220, 20, 40)  # clearly red
    data = encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), ".jpg")
    p = write(tmp_path / "c" / "red.JPG", data)
    loaded = load_sample(0, sample_of(p))
    assert loaded.error is None
    img = loaded.image
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    assert np.abs(img[8, 8].astype(int) - (220, 20, 40)).max() <= 4
    assert np.abs(img.astype(int) - pillow_rgb(data).astype(int)).max() <= 2


def test_non_ascii_file_name_decodes(tmp_path):
    p = write_png_rgb(tmp_path / "neutrophil" / "zellé_ß_細胞.png", rgb_patch())
    idx = discover(tmp_path)
    assert [s.rel for s in idx.samples] == ["neutrophil/zellé_ß_細胞.png"]
    assert idx.samples[0].label == "neutrophil"
    loaded = load_sample(0, idx.samples[0])
    assert loaded.error is None
    assert tuple(loaded.image[1, 2]) == (200, 30, 60)
    assert p.exists()


# ----------------------------------------------------------------------------------- discovery


@pytest.fixture
def png_bytes() -> bytes:
    return encode(cv2.cvtColor(rgb_patch(), cv2.COLOR_RGB2BGR), ".png")


def test_upper_case_extensions_found(tmp_path, png_bytes):
    write(tmp_path / "a" / "one.JPG", _good_jpeg())
    write(tmp_path / "a" / "two.PNG", png_bytes)
    write(tmp_path / "a" / "three.Jpeg", _good_jpeg())
    idx = discover(tmp_path)
    assert sorted(s.rel for s in idx.samples) == ["a/one.JPG", "a/three.Jpeg", "a/two.PNG"]
    assert idx.skipped == ()


def test_unknown_extension_and_hidden_files_skipped_with_reasons(tmp_path, png_bytes):
    write(tmp_path / "a" / "ok.png", png_bytes)
    write(tmp_path / "a" / "readme.txt", b"hello")
    write(tmp_path / "a" / ".DS_Store", b"\x00\x00")
    write(tmp_path / "a" / "._ok.jpg", b"AppleDouble")
    write(tmp_path / "a" / "noext", b"x")
    idx = discover(tmp_path)
    assert [s.rel for s in idx.samples] == ["a/ok.png"]
    reasons = {s.rel: s.reason for s in idx.skipped}
    assert reasons == {
        "a/readme.txt": "unknown extension '.txt'",
        "a/.DS_Store": "hidden file",
        "a/._ok.jpg": "hidden file",
        "a/noext": "no file extension",
    }
    assert idx.skipped[0].to_dict().keys() == {"path", "reason"}


def test_hidden_directories_ignored(tmp_path, png_bytes):
    write(tmp_path / "a" / "ok.png", png_bytes)
    write(tmp_path / ".git" / "x.png", png_bytes)  # hidden top-level dir: not a class
    write(tmp_path / "__MACOSX" / "a" / "y.png", png_bytes)
    write(tmp_path / "a" / ".ipynb_checkpoints" / "z.png", png_bytes)  # hidden nested dir
    idx = discover(tmp_path)
    assert idx.labels == ("a",)
    assert [s.rel for s in idx.samples] == ["a/ok.png"]
    assert idx.skipped == ()


def test_nested_subfolders_take_top_folder_label(tmp_path, png_bytes):
    write(tmp_path / "lymph" / "p1" / "s1" / "deep.png", png_bytes)
    write(tmp_path / "lymph" / "top.png", png_bytes)
    write(tmp_path / "mono" / "m.png", png_bytes)
    idx = discover(tmp_path)
    assert idx.source == "folders"
    assert idx.labels == ("lymph", "mono")
    got = {s.rel: s.label for s in idx.samples}
    assert got == {"lymph/p1/s1/deep.png": "lymph", "lymph/top.png": "lymph", "mono/m.png": "mono"}
    assert idx.counts() == {"lymph": 2, "mono": 1}
    for s in idx.samples:
        assert s.path == tmp_path / s.rel


def test_files_at_root_are_skipped(tmp_path, png_bytes):
    write(tmp_path / "a" / "ok.png", png_bytes)
    write(tmp_path / "stray.png", png_bytes)
    idx = discover(tmp_path)
    assert [s.rel for s in idx.samples] == ["a/ok.png"]
    assert [(s.rel, s.reason) for s in idx.skipped] == [("stray.png", "not inside a class folder")]


def test_empty_class_folder_is_not_fatal(tmp_path, png_bytes):
    write(tmp_path / "a" / "ok.png", png_bytes)
    (tmp_path / "b").mkdir()
    write(tmp_path / "c" / "only.txt", b"x")  # no image file: also empty
    idx = discover(tmp_path)
    assert idx.labels == ("a", "b", "c")
    assert idx.empty_labels == ("b", "c")
    assert idx.counts() == {"a": 1, "b": 0, "c": 0}


def _assert_input_error(exc_info, path) -> None:
    err = exc_info.value
    assert isinstance(err, InputError)
    assert err.exit_code == EXIT_BAD_INPUT == 2
    assert str(path) in err.message
    assert "\n" not in err.message


def test_folder_without_class_subfolders_is_input_error(tmp_path, png_bytes):
    write(tmp_path / "loose.png", png_bytes)
    with pytest.raises(InputError) as ei:
        discover(tmp_path)
    _assert_input_error(ei, tmp_path)
    assert "no class sub-folders" in ei.value.message


def test_missing_path_is_input_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InputError) as ei:
        discover(missing)
    _assert_input_error(ei, missing)


def test_non_csv_file_is_input_error(tmp_path):
    f = write(tmp_path / "data.txt", b"path,label\n")
    with pytest.raises(InputError) as ei:
        discover(f)
    _assert_input_error(ei, f)


def test_html_class_folder_name_is_a_label_verbatim(tmp_path, png_bytes):
    # a folder name cannot hold "/", so no closing tag; still markup, an entity and quotes
    name = "<b onclick=x>x&amp;\"'<script>"
    write(tmp_path / name / "a.png", png_bytes)
    idx = discover(tmp_path)
    assert idx.labels == (name,)
    assert idx.samples[0].label == name
    assert idx.samples[0].rel == f"{name}/a.png"


# ----------------------------------------------------------------------------------- CSV


def test_csv_input(tmp_path, png_bytes):
    write(tmp_path / "imgs" / "a.png", png_bytes)
    write(tmp_path / "imgs" / "sub" / "b.png", png_bytes)
    write(tmp_path / "imgs" / "c.txt", b"x")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(
        "path,label\nimgs/a.png,mono\nimgs/sub/b.png,lymph\nimgs/missing.png,mono\nimgs/c.txt,mono\n,mono\n",
        encoding="utf-8",
    )
    idx = discover(csv_path)
    assert idx.source == "csv"
    assert idx.root == tmp_path
    assert [(s.rel, s.label) for s in idx.samples] == [("imgs/a.png", "mono"), ("imgs/sub/b.png", "lymph")]
    assert idx.samples[0].path == tmp_path / "imgs" / "a.png"
    assert idx.labels == ("lymph", "mono")
    reasons = {s.rel: s.reason for s in idx.skipped}
    assert reasons["imgs/missing.png"] == "file not found"
    assert reasons["imgs/c.txt"] == "unknown extension '.txt'"
    assert reasons["labels.csv:6"] == "row without path or label"
    assert len(idx.skipped) == 3


def test_csv_header_is_case_and_space_insensitive_and_bom_ok(tmp_path, png_bytes):
    write(tmp_path / "a.png", png_bytes)
    csv_path = tmp_path / "l.csv"
    csv_path.write_bytes("\ufeff Path , LABEL\na.png,eos\n".encode("utf-8"))
    idx = discover(csv_path)
    assert [(s.rel, s.label) for s in idx.samples] == [("a.png", "eos")]


def test_csv_bad_header_is_input_error(tmp_path, png_bytes):
    write(tmp_path / "a.png", png_bytes)
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("file,class\na.png,eos\n", encoding="utf-8")
    with pytest.raises(InputError) as ei:
        discover(csv_path)
    _assert_input_error(ei, csv_path)
    assert "path" in ei.value.message and "label" in ei.value.message


def test_csv_with_no_existing_file_is_input_error(tmp_path):
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("path,label\nnope.png,eos\n", encoding="utf-8")
    with pytest.raises(InputError) as ei:
        discover(csv_path)
    _assert_input_error(ei, csv_path)


def test_csv_not_utf8_is_input_error(tmp_path):
    csv_path = tmp_path / "l.csv"
    csv_path.write_bytes(b"path,label\n\xff\xfe\xfa.png,eos\n")
    with pytest.raises(InputError) as ei:
        discover(csv_path)
    _assert_input_error(ei, csv_path)


# ----------------------------------------------------------------------------------- batches


def _mixed_samples(tmp_path: Path, n_good: int = 11, bad_at=(0, 4, 9, 13)) -> tuple[list[Sample], set[int]]:
    """n_good lossless images whose pixel (0,0) encodes their sample index, bad files interleaved."""
    samples: list[Sample] = []
    bad: set[int] = set()
    i_good = 0
    total = n_good + len(bad_at)
    for i in range(total):
        if i in bad_at:
            p = write(tmp_path / "c" / f"{i:03d}.jpg", b"not a jpeg" if i % 2 else b"")
            bad.add(i)
        else:
            rgb = np.zeros((3 + i % 3, 4, 3), np.uint8)  # sizes differ
            rgb[0, 0] = (i, 255 - i, 7)
            p = write_png_rgb(tmp_path / "c" / f"{i:03d}.png", rgb)
            i_good += 1
        samples.append(Sample(p, f"c/{p.name}", "c"))
    assert i_good == n_good
    return samples, bad


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("batch_size,prefetch", [(4, 2), (1, 0), (5, 1), (100, 2)])
def test_iter_batches_yields_each_good_image_once(tmp_path, workers, batch_size, prefetch):
    samples, bad = _mixed_samples(tmp_path)
    batches = list(iter_batches(samples, batch_size, workers=workers, prefetch_batches=prefetch))
    indices = [i for b in batches for i in b.indices]
    good = [i for i in range(len(samples)) if i not in bad]
    assert indices == good  # every good image exactly once, in order
    failed = [f.index for b in batches for f in b.failed]
    assert sorted(failed) == sorted(bad)
    assert all(f.error for b in batches for f in b.failed)
    for b in batches:
        assert len(b.indices) == len(b.images) <= batch_size
    assert all(len(b.indices) == batch_size for b in batches[:-1])
    # each image is the file of its index
    for b in batches:
        for i, img in zip(b.indices, b.images):
            assert img.dtype == np.uint8 and img.shape == (3 + i % 3, 4, 3)
            assert tuple(img[0, 0]) == (i, 255 - i, 7)
    # hashes of every file (good and bad), keyed by index
    hashes = {i: h for b in batches for i, h in b.hashes.items()}
    assert hashes == {i: hashlib.sha256(s.path.read_bytes()).hexdigest() for i, s in enumerate(samples)}


def test_iter_batches_empty_and_all_bad(tmp_path):
    assert list(iter_batches([], 4, workers=2)) == []
    p = write(tmp_path / "c" / "x.png", b"")
    batches = list(iter_batches([sample_of(p)] * 3, 2, workers=2))
    assert sum(len(b.indices) for b in batches) == 0
    assert sorted(f.index for b in batches for f in b.failed) == [0, 1, 2]


# ----------------------------------------------------------------------------------- fingerprint


def test_fingerprint_sensitivity():
    base = [("a/1.png", "a", "h1"), ("b/2.png", "b", "h2"), ("b/3.png", "b", "h3")]
    fp = fingerprint(base)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fingerprint(list(reversed(base))) == fp
    assert fingerprint([base[1], base[2], base[0]]) == fp
    assert fingerprint([base[0], base[1], ("b/3.png", "b", "h4")]) != fp  # content
    assert fingerprint([base[0], base[1], ("b/3.png", "a", "h3")]) != fp  # label
    assert fingerprint([base[0], base[1], ("b/4.png", "b", "h3")]) != fp  # path
    assert fingerprint(base[:2]) != fp  # a file removed
    assert fingerprint(base + [base[0]]) != fp  # a duplicate entry counts
    # independent reference: the documented recipe
    ref = hashlib.sha256("".join(f"{r}\t{lab}\t{d}\n" for r, lab, d in sorted(base)).encode()).hexdigest()
    assert fp == ref


def test_fingerprint_of_real_files_changes_with_content(tmp_path, png_bytes):
    write(tmp_path / "a" / "x.png", png_bytes)
    idx = discover(tmp_path)

    def fp_now():
        return fingerprint([(s.rel, s.label, load_sample(0, s).sha256) for s in idx.samples])

    before = fp_now()
    assert fp_now() == before
    write(tmp_path / "a" / "x.png", _good_png())
    assert fp_now() != before


# ----------------------------------------------------------------------------------- subsample


def _labels() -> np.ndarray:
    return np.array(["a"] * 120 + ["b"] * 40 + ["c"] * 3 + ["d"] * 1 + ["e"] * 36)


def test_stratified_subsample_keeps_every_class_and_is_deterministic():
    labels = _labels()
    rng = np.random.default_rng(5)
    labels = labels[rng.permutation(len(labels))]
    for n in (10, 25, 50, 120):
        idx = stratified_subsample(labels, n, seed=3)
        assert set(labels[idx]) == set(labels)
        assert np.all(np.diff(idx) > 0)  # sorted, unique
        assert idx.min() >= 0 and idx.max() < len(labels)
        assert abs(len(idx) - n) <= len(set(labels))  # about n
        np.testing.assert_array_equal(idx, stratified_subsample(labels, n, seed=3))
    assert not np.array_equal(stratified_subsample(labels, 50, seed=3), stratified_subsample(labels, 50, seed=4))


def test_stratified_subsample_is_proportional():
    labels = _labels()
    idx = stratified_subsample(labels, 100, seed=0)
    got = {c: int((labels[idx] == c).sum()) for c in "abcde"}
    # hand computation: round(100 * count / 200), at least 1
    assert got == {"a": 60, "b": 20, "c": 2, "d": 1, "e": 18}


def test_stratified_subsample_n_at_least_len_returns_all():
    labels = _labels()
    np.testing.assert_array_equal(stratified_subsample(labels, 500, seed=1), np.arange(len(labels)))
    np.testing.assert_array_equal(stratified_subsample(labels, len(labels), seed=1), np.arange(len(labels)))


def test_jpeg_with_data_after_its_end_marker_is_accepted():
    data = _good_jpeg() + b"\0" * 500 + b"trailing camera data"
    assert decode_image(data, "tail.jpg").shape == (32, 32, 3)


def test_symlink_loop_does_not_duplicate_samples(tmp_path):
    import os

    cls = tmp_path / "data" / "a"
    write(cls / "x.png", _good_png())
    os.symlink("..", cls / "loop")
    index = discover(tmp_path / "data")
    assert [s.rel for s in index.samples] == ["a/x.png"]


def test_hidden_file_at_the_root_is_reported_as_hidden(tmp_path):
    write(tmp_path / "data" / "a" / "x.png", _good_png())
    write(tmp_path / "data" / ".DS_Store", b"\0")
    index = discover(tmp_path / "data")
    assert [(s.rel, s.reason) for s in index.skipped] == [(".DS_Store", "hidden file")]
