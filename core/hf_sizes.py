"""The sizes of `transformers` models, counted from their specs in a child process.

A job's bounds need each model's parameters and activations at submission. A `transformers` model's come from
building it from its config on the meta device (no memory), which needs torch and transformers, and the API
never imports either (an import contract). So a child process (`python -m engine.models.hf.sizing`) counts
them, a few at a time, within a time bound; the figures are kept per spec, as the same models recur.
"""

import json
import subprocess
import sys
import threading
from functools import lru_cache

from core.errors import RequestError, unprocessable
from engine.plan.specs import HFSpec

SIZING_SECONDS = 60.0
CONCURRENT_SIZINGS = 2  # each child holds torch and transformers, some 400 MB
COUNTED = {"parameters", "activation_floats"}
_slots = threading.BoundedSemaphore(CONCURRENT_SIZINGS)


class SizingFailed(Exception):
    """The model could not be built from its spec; the message says why."""


def measured(spec: HFSpec, param: str) -> HFSpec:
    """`spec` with its `parameters` and `activation_floats` counted here (whatever the request said), or a
    422 naming `param` where transformers cannot build the model."""
    try:
        sizes = _sizes(spec.model_dump_json(exclude=COUNTED))
    except SizingFailed as failed:
        raise invalid_config(param, str(failed)) from None
    return spec.model_copy(update=sizes)


def invalid_config(param: str, reason: str) -> RequestError:
    return unprocessable(
        "invalid_model_config",
        f"{param} is no model transformers can build: {reason}. Check the config's fields against the "
        "model type's configuration class in the transformers documentation.",
        param=param,
    )


@lru_cache(maxsize=256)
def _sizes(spec_json: str) -> dict[str, int]:
    with _slots:
        try:
            run = subprocess.run(
                [sys.executable, "-m", "engine.models.hf.sizing"],
                input=spec_json,
                capture_output=True,
                text=True,
                timeout=SIZING_SECONDS,
            )
        except subprocess.TimeoutExpired:
            raise SizingFailed(f"building it took over {SIZING_SECONDS:g} s (an enormous config?)") from None
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines()
        raise SizingFailed(lines[-1] if lines else f"the sizing process ended with status {run.returncode}")
    sizes = json.loads(run.stdout)
    return {name: int(sizes[name]) for name in COUNTED}
