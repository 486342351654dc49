"""Memory/time baseline of an audit process: TensorFlow imported, the model loaded, one forward pass done.

Run as ``python -m bench._baseline MODEL [BATCH]``; prints one JSON line with the process's peak
(VmHWM) and current (VmRSS) resident set sizes in MiB and the seconds each step took. This is what
every audit process pays before it touches its first image, whatever the data set size.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def proc_status_mib() -> dict[str, float]:
    """VmRSS and VmHWM of this process in MiB (Linux /proc)."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024.0
    return out


def main(argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model_path = Path(argv[0])
    batch = int(argv[1]) if len(argv) > 1 else 32
    res: dict[str, object] = {"after_python": proc_status_mib()}
    t = time.perf_counter()
    import numpy as np

    from auditor.model import KerasClassifier  # imports TensorFlow + Keras, as the pipeline does

    res["import_s"] = time.perf_counter() - t
    res["after_import"] = proc_status_mib()
    t = time.perf_counter()
    from auditor.sidecar import load_sidecar

    sidecar = load_sidecar(model_path)
    adapter = KerasClassifier(model_path, input_size=sidecar.input_size if sidecar else None)
    res["load_s"] = time.perf_counter() - t
    res["after_load"] = proc_status_mib()
    h, w, _ = adapter.input_shape
    x = np.random.default_rng(0).uniform(0, 255, (batch, h, w, 3)).astype(np.float32)
    t = time.perf_counter()
    adapter.forward(x)  # traces the tf.function: what the first batch of every audit pays
    res["first_forward_s"] = time.perf_counter() - t
    t = time.perf_counter()
    adapter.forward(x)
    res["second_forward_s"] = time.perf_counter() - t
    res["after_forward"] = proc_status_mib()
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
