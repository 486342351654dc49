"""The Keras model adapter: the only module that imports TensorFlow.

It loads a model (``.keras``, legacy ``.h5``, or a TensorFlow SavedModel directory) with Keras's
``safe_mode`` on, checks that it is an image classifier, resizes and scales images the way the
model expects, and runs batched forward passes that return the class probabilities together with
the penultimate-layer features (one multi-output model, so one pass serves every analysis).

Resizing lives here, not in :mod:`auditor.data`, on purpose: ``tf.image.resize`` is what Keras's
own folder loader uses, so doing the same call gives bit-identical inputs to the ones the model was
trained on (OpenCV's bilinear/bicubic/nearest kernels differ from TensorFlow's in small but real ways).
The other loaders' resizers (PIL, OpenCV) and the table of every method live in :mod:`auditor.resize`.
"""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ._native import native_stderr_silenced

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
with native_stderr_silenced():
    import keras
    import tensorflow as tf

from . import families
from .analyses.gradcam import CamNotApplicable, combine, upsample
from .errors import AuditFailed, input_error
from .preprocess import scale_pixels
from .resize import METHODS, crop_box, resize_uint8

TF_RESIZE = {name: m.kernel for name, m in METHODS.items() if m.family == "plain"}
BINARY_SIGMOID = "sigmoid (binary)"  # output_type of a model with one sigmoid output
BINARY_LOGIT = "logit (binary)"  # output_type of a model with one linear (logit) output
ROW_SUM_TOL = 1e-3  # a probability row whose sum is further than this from 1 is counted as off
MODEL_HINT = "a .keras or .h5 model file, or a TensorFlow SavedModel directory"


@dataclass(frozen=True)
class ModelInfo:
    """What the report's header says about the model."""

    path: str
    file_name: str
    sha256: str
    format: str  # keras | h5 | savedmodel
    name: str
    param_count: int
    input_shape: tuple[int, int, int]  # height, width, channels
    n_outputs: int  # classes: 2 for a binary model with one sigmoid/logit output
    output_type: str  # probabilities | logits | sigmoid (binary) | logit (binary)
    output_detection: str  # how output_type was decided
    feature_layer: str | None
    feature_dim: int | None
    starts_with_rescaling: bool
    nested_base: str | None  # name of a nested keras.applications base model, if any
    safe_mode: bool
    base_family: str | None = None  # keras.applications family recognised in the model (auditor.families)
    base_scaling: str | None = None  # the scaling that family's base expects here (None: no family)
    base_note: str | None = None  # how the family was recognised and what it expects, for the report

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a directory's files (relative names and contents, sorted)."""
    h = hashlib.sha256()
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _load(path: Path, unsafe: bool):
    """Load and return (model-like, format). Raises InputError with one clear line."""
    if not path.exists():
        raise input_error(path, "no such file or directory", expected=MODEL_HINT)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise input_error(path, "is a directory without saved_model.pb", expected=MODEL_HINT)
        try:
            return tf.saved_model.load(str(path)), "savedmodel"
        except Exception as exc:
            raise input_error(path, f"could not be loaded as a SavedModel ({_first_line(exc)})") from None
    suffix = path.suffix.lower()
    if suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise input_error(path, "is not a Keras model (a .keras file is a zip archive; this one is not)")
        fmt = "keras"
    elif suffix in (".h5", ".hdf5"):
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89HDF\r\n\x1a\n":
                raise input_error(path, "is not an HDF5 model file (no HDF5 signature)")
        fmt = "h5"
    else:
        raise input_error(path, f"has the extension {suffix or '(none)'!r}", expected=MODEL_HINT)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text or "unsafe" in text.lower():
            raise input_error(
                path,
                "needs unsafe deserialisation (it holds Python code, e.g. a Lambda layer)",
                hint="Only if you trust where it came from, re-run with --unsafe-deserialization",
            ) from None
        raise input_error(path, f"could not be loaded as a Keras model ({_first_line(exc)})") from None
    if not isinstance(model, keras.Model):
        raise input_error(path, f"holds a {type(model).__name__}, not a Keras model")
    return model, fmt


def _weight_counts(arr) -> str | None:
    """'288 NaN', '1 Inf', '3 NaN, 1 Inf' for a weight array with non-finite values, else None."""
    a = np.asarray(arr)
    if not np.issubdtype(a.dtype, np.floating) or np.all(np.isfinite(a)):
        return None
    n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    return ", ".join(part for part in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} Inf" if n_inf else "") if part)


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def nonfinite_weights(model) -> list[str]:
    """'layer (weight: 288 NaN)' for every layer with a NaN or infinite weight (Keras model or SavedModel)."""
    found: dict[str, list[str]] = {}
    if isinstance(model, keras.Model):
        for layer in _leaf_layers(model):
            for w in layer.weights:
                bad = _weight_counts(keras.ops.convert_to_numpy(w))
                if bad:
                    found.setdefault(layer.name, []).append(f"{w.name.split('/')[-1].split(':')[0]}: {bad}")
    else:  # a SavedModel: its variables are named 'layer/weight:0' (or a path)
        for v in getattr(model, "variables", []):
            bad = _weight_counts(v.numpy())
            if bad:
                parts = v.name.split(":")[0].split("/")
                layer, weight = ("/".join(parts[:-1]) or parts[-1]), parts[-1]
                found.setdefault(layer, []).append(f"{weight}: {bad}")
    return [f"{layer} ({'; '.join(ws)})" for layer, ws in found.items()]


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _layer_of(tensor):
    hist = getattr(tensor, "_keras_history", None)
    return hist[0] if hist is not None else None


def _activation_name(layer) -> str | None:
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    return getattr(act, "__name__", None) or type(act).__name__


def _nested_base(model) -> str | None:
    """Name of the first nested sub-model (e.g. a keras.applications base such as 'vgg16'), if any."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer.name
    return None


def _nested_models(model):
    """Every sub-model inside ``model``, outermost first (depth-first)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield layer
            yield from _nested_models(layer)


@dataclass(frozen=True)
class BaseRecognition:
    """A keras.applications base found in a model, and the pixel scaling it expects."""

    family: str  # a name from auditor.families.FAMILIES, e.g. "MobileNetV2"
    base_name: str | None  # the nested base model's name; None when its layers are built flat into the model
    cue: str  # "layer names" or "model name"
    own_preprocessing: bool  # the base holds its own Rescaling/Normalization layers
    scaling: str  # what the audit should feed the model under --preprocess auto
    note: str  # for the report's scaling_source


def recognise_base(model) -> BaseRecognition | None:
    """Find a keras.applications base in ``model`` by its layer names (robust to renaming and to a base
    built flat into the model), else by a nested base's default name; None when there is none."""
    found = None
    for sub in _nested_models(model):
        fam = families.family_by_layers(layer.name for layer in sub.layers)
        if fam is not None:
            found = (fam, sub, sub.name, "layer names")
            break
    if found is None:
        fam = families.family_by_layers(layer.name for layer in model.layers)
        if fam is not None:
            found = (fam, model, None, "layer names")
    if found is None:
        for sub in _nested_models(model):
            fam = families.family_by_name(sub.name)
            if fam is not None:
                found = (fam, sub, sub.name, "model name")
                break
    if found is None:
        return None
    fam, base, base_name, cue = found
    own = _starts_with_rescaling(base)
    before = _starts_with_rescaling(model) and not own  # the user's own scaling layer in front of the base
    if base_name is not None:
        what = f"nested keras.applications base '{base_name}' ({fam.name} family, recognised by its {cue})"
    else:
        what = (
            f"keras.applications {fam.name}-family layers built into the model (not nested; recognised by their {cue})"
        )
    if before:
        scaling = "raw"
        note = f"the model starts with its own Rescaling/Normalization layer in front of its {what}: raw"
    elif own:
        scaling = "raw"
        note = f"{what} holds its own preprocessing layers (Rescaling/Normalization), so it expects raw"
    else:
        scaling = families.family_scaling(fam, has_own_preprocessing=False)
        note = f"{what} expects {scaling}"
        if fam.scaling == "raw":
            note += " (built without its own preprocessing layers, include_preprocessing=False)"
    return BaseRecognition(fam.name, base_name, cue, own, scaling, note)


def _starts_with_rescaling(model) -> bool:
    """True when a Rescaling or Normalization layer comes before the first layer with weights."""

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                yield from walk(layer)
            else:
                yield layer

    for layer in walk(model):
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            return True
        if layer.weights:
            return False
    return False


class KerasClassifier:
    """A loaded image classifier with batched, feature-returning forward passes.

    Parameters
    ----------
    path : model file or SavedModel directory.
    unsafe : load with Keras ``safe_mode`` off (the report records it).
    input_size : (height, width) to use when the model's input size is not fixed.
    """

    def __init__(self, path: Path, *, unsafe: bool = False, input_size: tuple[int, int] | None = None):
        self.path = Path(path)
        model, fmt = _load(self.path, unsafe)
        self.format = fmt
        self._features_note = None
        bad = nonfinite_weights(model)
        if bad:
            raise input_error(
                self.path,
                "weights are not finite in layer(s) " + ", ".join(bad),
                hint="the model is broken (a diverged training run or a corrupted file)",
            )
        self._raw_rows = 0
        self._raw_sum_min = np.inf
        self._raw_sum_max = -np.inf
        self._raw_rows_off = 0
        self._raw_rows_negative = 0
        self._raw_sum_total = 0.0
        if fmt == "savedmodel":
            self._init_savedmodel(model, input_size)
        else:
            self._init_keras(model, input_size)
        self.info = ModelInfo(
            path=str(self.path),
            file_name=self.path.name,
            sha256=file_sha256(self.path),
            format=fmt,
            name=self._name,
            param_count=self._param_count,
            input_shape=self.input_shape,
            n_outputs=self.n_outputs,
            output_type=self._output_type or "pending",
            output_detection=self._output_detection or "pending",
            feature_layer=self._feature_layer,
            feature_dim=self._feature_dim,
            starts_with_rescaling=self._rescaling,
            safe_mode=not unsafe,
            nested_base=self._base,
            base_family=self._recognition.family if self._recognition else None,
            base_scaling=self._recognition.scaling if self._recognition else None,
            base_note=self._recognition.note if self._recognition else None,
        )

    # -------------------------------------------------------------- set-up
    def _check_shapes(self, in_shape, out_shape, input_size):
        if len(in_shape) != 4:
            raise input_error(
                self.path,
                f"is not an image classifier: input shape {tuple(in_shape)} has rank {len(in_shape)}",
                expected="rank 4 (batch, height, width, channels)",
            )
        h, w, c = in_shape[1], in_shape[2], in_shape[3]
        if h is None or w is None:
            if input_size is None:
                raise input_error(self.path, "has no fixed input size", hint="set input_size in its sidecar JSON")
            h, w = input_size
        if c not in (1, 3):
            raise input_error(self.path, f"takes {c} channels", expected="1 (grayscale) or 3 (RGB) channels last")
        if len(out_shape) != 2:
            raise input_error(
                self.path,
                f"is not an image classifier: output shape {tuple(out_shape)} has rank {len(out_shape)}",
                expected="rank 2 (batch, classes)",
            )
        if out_shape[1] is None or out_shape[1] < 1:
            raise input_error(
                self.path,
                f"has {out_shape[1]} output(s)",
                expected="one output per class, or one sigmoid/logit output for two classes",
            )
        self.input_shape = (int(h), int(w), int(c))
        self.binary = int(out_shape[1]) == 1  # one sigmoid (or logit) output read as two classes [1-s, s]
        self.n_outputs = 2 if self.binary else int(out_shape[1])

    def _init_keras(self, model, input_size):
        self.model = model
        self._name = model.name
        self._param_count = int(model.count_params())
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise input_error(
                self.path,
                f"has {len(model.inputs)} inputs and {len(model.outputs)} outputs",
                expected="one image input and one class output",
            )
        self._check_shapes(tuple(model.inputs[0].shape), tuple(model.outputs[0].shape), input_size)
        self._rescaling = _starts_with_rescaling(model)
        self._base = _nested_base(model)
        self._recognition = recognise_base(model)
        out_layer = _layer_of(model.outputs[0])
        act = _activation_name(out_layer) if out_layer is not None else None
        self._out_activation = act
        dense_layer = out_layer
        if isinstance(out_layer, (keras.layers.Activation, keras.layers.Softmax)):
            dense_layer = _layer_of(out_layer.input)
        if act == "sigmoid" and not self.binary:
            raise input_error(
                self.path,
                f"ends in {self.n_outputs} sigmoid outputs (a multi-label model)",
                expected="a single-label classifier: softmax or logits over the classes, or one "
                "sigmoid output for two classes",
            )
        if self.binary:
            self._decide_binary_from_layer(act, out_layer)
        elif act == "softmax":
            self._output_type, self._output_detection = "probabilities", f"softmax in layer '{out_layer.name}'"
        elif act == "linear":
            self._output_type, self._output_detection = (
                "logits",
                f"linear output layer '{out_layer.name}'; softmax applied",
            )
        else:
            self._output_type = self._output_detection = None  # decided from the first batch
        feats = None
        self._feature_layer = self._feature_dim = None
        self._dense = dense_layer if isinstance(dense_layer, keras.layers.Dense) else None
        if isinstance(dense_layer, keras.layers.Dense):
            try:
                feats = dense_layer.input
                self._feature_layer = f"input of '{dense_layer.name}'"
                dim = int(np.prod([d for d in feats.shape[1:]]))
                self._feature_dim = dim
            except Exception:
                feats = None
        if feats is None:
            self._features_note = "no penultimate features: the output does not come from a Dense layer"
        outputs = [model.outputs[0]] + ([feats] if feats is not None else [])
        multi = keras.Model(model.inputs, outputs)
        spec = tf.TensorSpec((None,) + self.input_shape, tf.float32)
        has_feats = feats is not None

        @tf.function(input_signature=[spec], reduce_retracing=True)
        def forward(x):
            out = multi(x, training=False)
            if has_feats:
                return out[0], tf.reshape(out[1], (tf.shape(out[1])[0], -1))
            out = out[0] if isinstance(out, (list, tuple)) else out  # a one-output model may return the bare tensor
            return out, tf.zeros((tf.shape(x)[0], 0))

        self._forward = forward

    def _init_savedmodel(self, loaded, input_size):
        sigs = getattr(loaded, "signatures", {})
        if "serving_default" not in sigs:
            raise input_error(self.path, "SavedModel has no 'serving_default' signature")
        sig = sigs["serving_default"]
        inputs = sig.structured_input_signature[1]
        outputs = sig.structured_outputs
        if len(inputs) != 1 or len(outputs) != 1:
            raise input_error(
                self.path,
                f"SavedModel signature has {len(inputs)} inputs and {len(outputs)} outputs",
                expected="one image input and one class output",
            )
        in_name, in_spec = next(iter(inputs.items()))
        out_name, out_spec = next(iter(outputs.items()))
        self._check_shapes(tuple(in_spec.shape), tuple(out_spec.shape), input_size)
        self.model = loaded
        self._name = self.path.name
        self._param_count = int(sum(int(np.prod(v.shape)) for v in getattr(loaded, "variables", [])))
        self._rescaling = False
        self._base = None
        self._recognition = None
        self._out_activation = None
        self._output_type = self._output_detection = None
        self._feature_layer = self._feature_dim = None
        self._features_note = "no penultimate features: SavedModel signatures expose only the output"
        self._dense = None

        def forward(x):
            out = sig(**{in_name: tf.cast(x, in_spec.dtype)})[out_name]
            return out, tf.zeros((tf.shape(x)[0], 0))

        self._forward = forward

    # -------------------------------------------------------------- the last layer
    def last_dense(self) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """The final Dense layer's kernel (d, k) and bias (k,) as float64, with ``""``; or ``(None, None,
        reason)`` when the output does not come from a Dense layer on a feature vector (logits = W^T h + b)."""
        layer = self._dense
        if layer is None:
            return None, None, self._features_note or "the output does not come from a Dense layer"
        if len(layer.input.shape) != 2:
            return None, None, f"the last Dense layer '{layer.name}' acts on a rank-{len(layer.input.shape)} tensor"
        act = _activation_name(layer)
        if act not in ("softmax", "linear", "sigmoid"):
            return None, None, f"the last Dense layer '{layer.name}' has a {act} activation"
        kernel = np.asarray(layer.kernel.numpy(), dtype=np.float64)
        bias = np.asarray(layer.bias.numpy(), dtype=np.float64) if layer.use_bias else np.zeros(kernel.shape[1])
        return kernel, bias, ""

    # -------------------------------------------------------------- data path
    @property
    def features_note(self) -> str | None:
        return self._features_note

    def prepare(
        self, images: Sequence[np.ndarray], *, resize: str, scaling: str, crop: str = "none", channels: str = "rgb"
    ) -> np.ndarray:
        """Crop and resize uint8 RGB images (any sizes) to the model's input, order channels, and scale.

        ``resize`` is a name of :data:`auditor.resize.METHODS`; ``crop`` is none | center-square |
        center:F; ``channels`` rgb | bgr. Returns float32 (n, h, w, c). TensorFlow methods resize the
        images of one shape together in one call; PIL and OpenCV methods go image by image on uint8 and
        round to uint8, as those libraries do.
        """
        h, w, c = self.input_shape
        method = METHODS[resize]
        out = np.empty((len(images), h, w, 3), dtype=np.float32)
        if method.family in ("pil", "cv2"):
            resize_uint8(images, out, (h, w), method, crop)
        else:
            groups: dict[tuple, list[int]] = {}
            for i, img in enumerate(images):
                groups.setdefault(img.shape, []).append(i)
            for shape, idx in groups.items():
                top, left, ch, cw = crop_box(shape[0], shape[1], crop, (h, w))
                if (ch, cw) == shape[:2]:
                    stack = np.stack([images[i] for i in idx])
                else:
                    stack = np.stack([images[i][top : top + ch, left : left + cw] for i in idx])
                if (ch, cw) == (h, w) and method.family == "plain" and resize != "lanczos":
                    # at equal size these kernels sample each pixel centre exactly: tf.image.resize is the
                    # identity (tested bit for bit), so skip its cost
                    out[idx] = stack
                else:
                    out[idx] = tf.image.resize(stack, (h, w), method=method.kernel, antialias=method.antialias).numpy()
        if channels == "bgr":
            out = out[..., ::-1]
        elif channels != "rgb":
            raise ValueError(f"unknown channel order {channels!r}")
        if c == 1:
            out = np.dot(out, np.array([0.2989, 0.5870, 0.1140], dtype=np.float32))[..., None]
        return scale_pixels(out, scaling)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run one batch. Returns probabilities (n, k) float64 and features (n, d) float32 (d may be 0)."""
        raw, feats = self._forward(tf.convert_to_tensor(x, dtype=tf.float32))
        raw = raw.numpy().astype(np.float64)
        if not np.all(np.isfinite(raw)):
            bad = int(np.sum(~np.all(np.isfinite(raw), axis=1)))
            raise AuditFailed(
                f"{self.path}: the model produced NaN or infinite outputs for {bad} of "
                f"{len(raw)} images in a batch; it is broken (check its weights) and cannot be audited"
            )
        if self.binary:
            return self._binary_probs(raw[:, 0]), feats.numpy()
        if self._output_type is None:
            self._decide_output_type(raw)
        sums = raw.sum(axis=1)
        self._raw_rows += len(raw)
        self._raw_sum_total += float(sums.sum())
        if len(raw):
            self._raw_sum_min = min(self._raw_sum_min, float(sums.min()))
            self._raw_sum_max = max(self._raw_sum_max, float(sums.max()))
        self._raw_rows_off += int(np.sum(np.abs(sums - 1.0) > ROW_SUM_TOL))
        self._raw_rows_negative += int(np.sum(raw.min(axis=1) < -1e-6)) if len(raw) else 0
        if self._output_type == "logits":
            z = raw - raw.max(axis=1, keepdims=True)
            e = np.exp(z)
            probs = e / e.sum(axis=1, keepdims=True)
        else:
            # claimed probabilities: negatives clipped and rows normalised, so the audit goes on; rows that
            # do not sum to 1 are counted in output_stats and the model-sanity analysis warns about them
            probs = np.clip(raw, 0.0, None)
            total = probs.sum(axis=1, keepdims=True)
            zero = total[:, 0] <= 0
            if zero.any():
                probs[zero] = 1.0 / probs.shape[1]
                total[zero] = 1.0
            probs /= total
        return probs, feats.numpy()

    # -------------------------------------------------------------- binary models (one output)
    def _decide_binary_from_layer(self, act: str | None, out_layer) -> None:
        read = "read as two classes: P(class index 1) = {}, P(class index 0) = 1 - P(class index 1)"
        if act == "sigmoid":
            self._output_type = BINARY_SIGMOID
            self._output_detection = f"one sigmoid output in layer '{out_layer.name}', " + read.format("s")
        elif act == "linear":
            self._output_type = BINARY_LOGIT
            self._output_detection = f"one linear output in layer '{out_layer.name}' (a logit z), " + read.format(
                "sigmoid(z)"
            )
        else:
            self._output_type = self._output_detection = None  # decided from the first batch

    def _binary_probs(self, s: np.ndarray) -> np.ndarray:
        """(n,) single outputs -> (n, 2) probabilities [1 - p, p] with p = P(class index 1)."""
        if self._output_type is None:
            self._decide_binary_output(s)
        if self._output_type == BINARY_LOGIT:
            return np.stack([_sigmoid(-s), _sigmoid(s)], axis=1)
        if s.min() < -1e-6 or s.max() > 1 + 1e-6:
            raise input_error(
                self.path,
                f"has one output read as a probability, but it gave values from "
                f"{s.min():.4g} to {s.max():.4g}, outside [0, 1]",
                expected="one sigmoid output (probability of the second class) or one linear output (its logit)",
            )
        p = np.clip(s, 0.0, 1.0)
        return np.stack([1.0 - p, p], axis=1)

    def _decide_binary_output(self, s: np.ndarray) -> None:
        act = self._out_activation
        read = "read as two classes: P(class index 1) = {}, P(class index 0) = 1 - P(class index 1)"
        in_unit = len(s) > 0 and s.min() >= -1e-6 and s.max() <= 1 + 1e-6
        if in_unit:
            self._output_type = BINARY_SIGMOID
            self._output_detection = (
                (f"one output ending in a '{act}' activation" if act else "one output")
                + " with values in [0, 1] on the first batch, "
                + read.format("the output")
            )
        elif act in (None, "linear"):
            self._output_type = BINARY_LOGIT
            self._output_detection = (
                "one output with values outside [0, 1] on the first batch (a logit z), " + read.format("sigmoid(z)")
            )
        else:
            raise input_error(
                self.path,
                f"has one output ending in a '{act}' activation with values from "
                f"{s.min():.4g} to {s.max():.4g}: not a probability in [0, 1] and not a logit",
                expected="a classifier: one sigmoid output (probability of the second class), one "
                "linear output (its logit), or softmax/logits over the classes",
            )
        self.info = _replace(self.info, output_type=self._output_type, output_detection=self._output_detection)

    @property
    def output_stats(self) -> dict:
        """Raw-output statistics over every forward call so far: rows, min/max raw row sum, rows whose raw
        sum is off 1 by more than ROW_SUM_TOL, rows with a negative output (meaningful for probabilities)."""
        n = self._raw_rows
        return {
            "n_rows": n,
            "min_row_sum": float(self._raw_sum_min) if n else None,
            "max_row_sum": float(self._raw_sum_max) if n else None,
            "mean_row_sum": self._raw_sum_total / n if n else None,
            "rows_off": self._raw_rows_off,
            "rows_negative": self._raw_rows_negative,
            "tolerance": ROW_SUM_TOL,
        }

    def reset_output_stats(self) -> None:
        self._raw_rows = self._raw_rows_off = self._raw_rows_negative = 0
        self._raw_sum_total = 0.0
        self._raw_sum_min, self._raw_sum_max = np.inf, -np.inf

    def _decide_output_type(self, raw: np.ndarray) -> None:
        finite = raw[np.all(np.isfinite(raw), axis=1)]
        is_probs = (
            len(finite) > 0
            and finite.min() >= -1e-6
            and finite.max() <= 1 + 1e-6
            and np.abs(finite.sum(axis=1) - 1).max() < 1e-3
        )
        if is_probs:
            self._output_type, self._output_detection = "probabilities", "outputs are non-negative and sum to 1"
        elif self._out_activation not in (None, "linear"):
            sums = finite.sum(axis=1) if len(finite) else np.array([np.nan])
            raise input_error(
                self.path,
                f"ends in a '{self._out_activation}' activation whose outputs are not "
                f"class probabilities (row sums {np.nanmin(sums):.3g} to {np.nanmax(sums):.3g})",
                expected="a softmax (probabilities) or linear (logits) output, one class per image",
            )
        else:
            self._output_type, self._output_detection = "logits", "outputs do not sum to 1; softmax applied"
        self.info = _replace(self.info, output_type=self._output_type, output_detection=self._output_detection)

    def measure_speed(self, batch_size: int = 32, runs: int = 20, warmup: int = 3, seed: int = 0) -> dict:
        """Latency of one image (batch 1: median of ``runs`` timed forward passes after ``warmup`` untimed
        ones) and throughput at ``batch_size`` (images per second: batch size over the median of
        ``max(3, runs // 4)`` timed batches after one untimed), on random inputs of the model's input shape,
        through the same forward function the audit uses (outputs copied to the host)."""
        rng = np.random.default_rng(seed)
        one = tf.convert_to_tensor(rng.random((1,) + self.input_shape, dtype=np.float32))
        many = tf.convert_to_tensor(rng.random((batch_size,) + self.input_shape, dtype=np.float32))

        def timed(x) -> float:
            t = time.perf_counter()
            out = self._forward(x)
            out[0].numpy()
            return time.perf_counter() - t

        for _ in range(max(1, warmup)):
            timed(one)
        lat = [timed(one) for _ in range(max(1, runs))]
        timed(many)
        n_batches = max(3, runs // 4)
        per_batch = [timed(many) for _ in range(n_batches)]
        return {
            "latency_ms": float(np.median(lat) * 1000.0),
            "latency_runs": len(lat),
            "throughput": float(batch_size / np.median(per_batch)),
            "throughput_batch_size": int(batch_size),
            "throughput_runs": n_batches,
        }

    def predict_arrays(self, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Probabilities for already prepared inputs, in batches."""
        parts = [self.forward(x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.n_outputs))

    # -------------------------------------------------------------- Grad-CAM (see the end of this module)
    def cam_target(self, layer: str | None = None, source: str = "--cam-layer") -> CamTarget:
        """The Grad-CAM target layer; ``layer`` (a path such as ``mobilenetv2/out_relu``) overrides the
        automatic choice. Bad path: input error listing candidates; no usable conv layer: CamNotApplicable."""
        return _cam_target(self, layer, source)

    def gradcam(self, x: np.ndarray, classes, *, layer: str | None = None, method: str = "gradcam", batch_size=32):
        """Grad-CAM (or Grad-CAM++) maps (n, H, W) at the input size, each scaled to a maximum of 1."""
        return _gradcam(self, x, classes, layer=layer, method=method, batch_size=batch_size)

    def cam_sanity(self, x: np.ndarray, classes, *, layer=None, method="gradcam", seed=0, batch_size=32):
        """Cascading-randomisation maps [(layer path, maps)], top layer first, on a reloaded copy."""
        return _cam_sanity(self, x, classes, layer=layer, method=method, seed=seed, batch_size=batch_size)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function without overflow for large |z| (float64)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def decode_tf(data: bytes) -> np.ndarray:
    """Decode image bytes as ``keras.utils.image_dataset_from_directory`` does (``tf.io.decode_image``,
    3 channels): for JPEGs its fast integer DCT gives pixels that differ from OpenCV's and PIL's."""
    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


def decoder_for(resize: str):
    """The decoder of the training loader that ``resize`` reproduces: a callable, ``"pil"`` or ``"cv2"``
    (the latter two understood by :func:`auditor.data.decode_image`)."""
    kind = METHODS[resize].decoder
    return decode_tf if kind == "tf" else kind


def _replace(info: ModelInfo, **changes) -> ModelInfo:
    d = asdict(info)
    d.update(changes)
    return ModelInfo(**d)


def environment() -> dict:
    """Versions and devices, for the report header."""
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "devices": "GPU: " + ", ".join(g.name for g in gpus) if gpus else "CPU only",
    }


# ------------------------------------------------------------------------------------------ Grad-CAM
#
# The forward computation is replayed layer by layer (a Sequential's layers in order, a Functional model's
# graph node by node through ``_run_through_graph``), descending into nested models, so a keras.applications
# base nested in a Sequential or Functional head never needs a "connected" sub-graph (the classic "graph
# disconnected" failure). ``_run_through_graph`` is private Keras 3 API: the public route, a functional
# sub-model ``keras.Model(model.inputs, [target.output, ...])``, fails for a base nested in a Sequential or
# Functional head ("graph disconnected": the nested layer's output belongs to the base's own graph), which is
# the case this replay exists for; where the method is missing the error says so. Two hooks: the target layer's
# output is kept, and the output layer gives its pre-softmax scores (a Dense softmax/sigmoid layer's linear part;
# the input of a final Softmax/Activation).

_CONV_TYPES = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)
_PREPROCESSING_TYPES = (keras.layers.Rescaling, keras.layers.Normalization, keras.layers.Resizing)
_CAM_BATCH = 32


def _layer_shape(layer) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except Exception:
        return None


def _leaves_with_paths(model, prefix: str = ""):
    """(path, layer) of every leaf layer in forward order, descending into nested models."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            yield from _leaves_with_paths(layer, path + "/")
        elif not isinstance(layer, keras.layers.InputLayer):
            yield path, layer


def _layer_by_path(model, path: str):
    """The chain of layers [outer nested model, ..., leaf] named by ``a/b/c``, or None."""
    chain, cur = [], model
    for part in path.split("/"):
        if not isinstance(cur, keras.Model):
            return None
        found = next((layer for layer in cur.layers if layer.name == part), None)
        if found is None:
            return None
        chain.append(found)
        cur = found
    return chain


def _call_layer(layer, args, kwargs, hooks):
    kwargs = {k: v for k, v in kwargs.items() if k != "training"}
    fn = hooks.get(id(layer))
    if fn is not None:
        return fn(layer, args, kwargs)
    if isinstance(layer, keras.Model) and any(id(sub) in hooks for _, sub in _all_layers(layer)):
        return _replay(layer, args[0], hooks)
    if getattr(layer, "_call_has_training_arg", False):
        kwargs["training"] = False
    return layer(*args, **kwargs)


def _all_layers(model):
    for layer in model.layers:
        yield layer.name, layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _replay(model, x, hooks):
    """Run ``model`` on ``x`` layer by layer, with ``hooks`` {id(layer): fn(layer, args, kwargs)}."""
    if isinstance(model, keras.Sequential):
        out = x
        for layer in model.layers:
            out = _call_layer(layer, (out,), {}, hooks)
        return out
    if not hasattr(model, "_run_through_graph"):  # private Keras 3 API (checked on 3.15): say so if it goes
        raise CamNotApplicable(
            f"this Keras ({keras.__version__}) lacks the private Functional._run_through_graph that Grad-CAM uses "
            f"to replay the sub-model '{model.name}' ({type(model).__name__}) layer by layer"
        )

    def operation_fn(op):
        return lambda *args, **kwargs: _call_layer(op, args, kwargs, hooks)

    out = model._run_through_graph([x], operation_fn=operation_fn)
    return out[0] if isinstance(out, (list, tuple)) else out


def _sanity_layers(leaves, target_index: int) -> list[tuple[str, object]]:
    """Layers with a kernel from the output down to and including the last convolution at or before the
    target layer (the last convolutional block), top first."""
    out = []
    for path, layer in reversed(leaves):
        if not any("kernel" in w.path.split("/")[-1] for w in layer.weights):
            continue
        idx = next(i for i, (p, _) in enumerate(leaves) if p == path)
        out.append((path, layer))
        if idx <= target_index and isinstance(layer, _CONV_TYPES):
            break
    return out


class _CamRunner:
    """Grad-CAM for one Keras model and one target layer: ``maps(x, classes)``."""

    def __init__(self, model, path: str | None, *, binary: bool, output_type: str | None, source: str):
        self.model = model
        leaves = list(_leaves_with_paths(model))
        self.leaves = leaves
        spatial = [(p, layer) for p, layer in leaves if (s := _layer_shape(layer)) is not None and len(s) == 4]
        candidates = [p for p, layer in spatial if not isinstance(layer, _PREPROCESSING_TYPES)]
        if path:
            chain = _layer_by_path(model, path)
            shape = _layer_shape(chain[-1]) if chain else None
            if chain is None or isinstance(chain[-1], keras.Model) or shape is None or len(shape) != 4:
                why = "does not exist" if chain is None else "has no spatial (rank-4) output"
                if chain is not None and isinstance(chain[-1], keras.Model):
                    why = "names a whole nested model, not a layer inside it"
                shown = candidates[-12:]
                more = f"{len(candidates) - len(shown)} earlier ones and " if len(candidates) > len(shown) else ""
                raise input_error(
                    source,
                    f"layer path {path!r} {why} in model '{model.name}'",
                    expected="a layer with a spatial output; candidates: "
                    + (more + ", ".join(shown) if shown else "(none)"),
                    hint="name a layer inside a nested model as outer/inner, e.g. mobilenetv2/out_relu",
                )
            self.path = "/".join(layer.name for layer in chain)
        else:
            target = None
            for p, layer in leaves:
                shape = _layer_shape(layer)
                if shape is not None and len(shape) < 4:
                    break
                if shape is not None and len(shape) == 4 and not isinstance(layer, _PREPROCESSING_TYPES):
                    target = p
            if target is None:
                raise CamNotApplicable(
                    f"no layer with a spatial (rank-4) output before the pooling/flatten in '{model.name}'"
                )
            self.path = target
            chain = _layer_by_path(model, target)
        tindex = next(i for i, (p, _) in enumerate(leaves) if p == self.path)
        if not any(isinstance(layer, _CONV_TYPES) for _, layer in leaves[: tindex + 1]):
            raise CamNotApplicable(
                f"the model '{model.name}' has no convolutional layer before '{self.path}': "
                "its spatial maps carry no learned spatial evidence for Grad-CAM to weigh"
            )
        self.target_index = tindex
        self.target = chain[-1]
        self.shape = tuple(int(d) for d in _layer_shape(self.target)[1:3])
        self.binary = binary
        self.hooks = {}
        self._kept: list = []

        def keep(layer, args, kwargs):
            kw = dict(kwargs)
            if getattr(layer, "_call_has_training_arg", False):
                kw["training"] = False
            out = layer(*args, **kw)
            self._kept.append(out)
            return out

        self.hooks[id(self.target)] = keep
        # pre-softmax scores
        out_layer = _layer_of(model.outputs[0]) if getattr(model, "outputs", None) else model.layers[-1]
        act = _activation_name(out_layer)
        self.score_note = "the output (logits)"
        self.log_prob = False
        if isinstance(out_layer, keras.layers.Dense) and act in ("softmax", "sigmoid"):

            def linear(layer, args, kwargs):
                z = keras.ops.matmul(args[0], layer.kernel)
                return z + layer.bias if layer.use_bias else z

            self.hooks[id(out_layer)] = linear
            self.score_note = f"the pre-{act} scores of '{out_layer.name}'"
        elif isinstance(out_layer, (keras.layers.Softmax, keras.layers.Activation)) and act in ("softmax", "sigmoid"):
            self.hooks[id(out_layer)] = lambda layer, args, kwargs: args[0]
            self.score_note = f"the input of the final {act} layer '{out_layer.name}'"
        elif output_type in ("probabilities", BINARY_SIGMOID):
            self.log_prob = True
            self.score_note = "the log-probability (the output is already a probability)"
        spec = tf.TensorSpec((None,) + tuple(int(d) for d in model.inputs[0].shape[1:]), tf.float32)

        @tf.function(input_signature=[spec, tf.TensorSpec((None,), tf.int32)], reduce_retracing=True)
        def grads(x, cls):
            self._kept.clear()
            with tf.GradientTape() as tape:
                out = _replay(self.model, x, self.hooks)
                acts = self._kept[-1]
                out = tf.cast(out, tf.float32)
                if self.log_prob:
                    out = tf.math.log(tf.clip_by_value(out, 1e-12, 1.0))
                    if self.binary:
                        out = out - tf.math.log(tf.clip_by_value(1.0 - tf.exp(out), 1e-12, 1.0))  # logit
                if self.binary:
                    out = tf.concat([-out[:, :1], out[:, :1]], axis=1)
                score = tf.reduce_sum(tf.gather(out, cls, axis=1, batch_dims=1))
            return acts, tape.gradient(score, acts), out

        self._grads = grads

    def raw(self, x: np.ndarray, classes: np.ndarray):
        acts, g, out = self._grads(tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(classes, tf.int32))
        return acts.numpy(), g.numpy(), out.numpy()

    def maps(self, x: np.ndarray, classes: np.ndarray, method: str, batch_size: int = _CAM_BATCH) -> np.ndarray:
        """Maps (n, H, W) at the input size, each scaled to a maximum of 1: one gradient tape per batch."""
        h, w = (int(d) for d in self.model.inputs[0].shape[1:3])
        out = np.zeros((len(x), h, w), dtype=np.float32)
        classes = np.asarray(classes, dtype=np.int32)
        for lo in range(0, len(x), batch_size):
            acts, g, _ = self.raw(x[lo : lo + batch_size], classes[lo : lo + batch_size])
            out[lo : lo + batch_size] = upsample(combine(acts, g, method), (h, w))
        return out


@dataclass(frozen=True)
class CamTarget:
    """The layer Grad-CAM uses and what is differentiated."""

    layer: str  # path, e.g. 'mobilenetv2_0.35_96/out_relu'
    map_shape: tuple[int, int]  # the layer's spatial size
    score: str  # what the gradient is taken of


def _cam_runner(self, layer: str | None, source: str = "--cam-layer") -> _CamRunner:
    if self.format == "savedmodel":
        raise CamNotApplicable("a SavedModel exposes only its serving signature, not its layers")
    cache = self.__dict__.setdefault("_cam_cache", {})
    if layer not in cache:
        cache[layer] = _CamRunner(self.model, layer, binary=self.binary, output_type=self._output_type, source=source)
    return cache[layer]


def _cam_target(self, layer: str | None = None, source: str = "--cam-layer") -> CamTarget:
    """The Grad-CAM target layer (``layer`` a path overrides the automatic choice). Raises an input error
    for a bad path and :class:`CamNotApplicable` for a model without a usable convolutional layer."""
    r = _cam_runner(self, layer, source)
    return CamTarget(r.path, r.shape, r.score_note)


def _gradcam(self, x: np.ndarray, classes, *, layer: str | None = None, method: str = "gradcam", batch_size=32):
    """Maps (n, H, W) of the classes ``classes`` (n,) for prepared inputs ``x``, scaled to a maximum of 1."""
    return _cam_runner(self, layer).maps(x, np.asarray(classes), method, batch_size)


def _cam_sanity(
    self, x: np.ndarray, classes, *, layer: str | None = None, method: str = "gradcam", seed: int = 0, batch_size=32
) -> list[tuple[str, np.ndarray]]:
    """Cascading randomisation (Adebayo et al. 2018) on a copy of the model reloaded from its file (the
    audit's model is untouched): the layers with a kernel are re-drawn from the output down through the last
    convolution at or before the target layer, one more per stage; returns (layer path, maps) per stage.
    Each kernel and bias is replaced by normal noise with the standard deviation of the trained values (a
    Glorot-like scale where those are constant); BatchNorm statistics are kept, so the maps stay finite."""
    if self.format == "savedmodel":
        raise CamNotApplicable("a SavedModel exposes only its serving signature, not its layers")
    trained = _cam_runner(self, layer)
    copy = keras.saving.load_model(self.path, compile=False, safe_mode=self.info.safe_mode)
    runner = _CamRunner(copy, trained.path, binary=self.binary, output_type=self._output_type, source="layer")
    rng = np.random.default_rng(seed)
    stages = []
    for path, lay in _sanity_layers(runner.leaves, runner.target_index):
        new = []
        for w in lay.get_weights():
            sd = float(np.std(w))
            if sd == 0:
                sd = float(np.sqrt(2.0 / max(1, int(np.prod(w.shape[:-1])) + w.shape[-1])))
            new.append(rng.normal(0.0, sd, size=w.shape).astype(w.dtype))
        lay.set_weights(new)
        stages.append((path, runner.maps(x, np.asarray(classes), method, batch_size)))
    return stages
