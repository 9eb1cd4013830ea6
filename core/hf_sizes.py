"""The sizes of `transformers` models, counted from their specs in a child process.

A job's bounds need each model's parameters and activations at submission. A `transformers` model's come from
building it from its config on the meta device (no memory), which needs torch and transformers, and the API
never imports either (an import contract). So a child process (`python -m engine.models.hf.sizing`) counts a
submission's models together, a few submissions at a time, within a time bound; the figures are kept per
spec, as the same models recur (a tenant's teacher, the students derived from it).
"""

import json
import subprocess
import sys
import threading
from collections import OrderedDict

from core.errors import RequestError, unprocessable
from engine.plan.specs import HFSpec

SIZING_SECONDS = 60.0
CONCURRENT_SIZINGS = 2  # each child holds torch and transformers, some 400 MB
KEPT_SIZES = 256
COUNTED = {"parameters", "activation_floats"}
_slots = threading.BoundedSemaphore(CONCURRENT_SIZINGS)
_lock = threading.Lock()
_known: OrderedDict[str, dict] = OrderedDict()  # a spec's JSON (without its sizes) -> its sizes or error


def measured(specs: list[tuple[HFSpec, str]]) -> list[HFSpec]:
    """Each spec with its `parameters` and `activation_floats` counted here (whatever the request said),
    given with the request's field it came from; a 422 naming the field of one transformers cannot build."""
    keys = [spec.model_dump_json(exclude=COUNTED) for spec, _param in specs]
    with _lock:
        missing = [key for key in dict.fromkeys(keys) if key not in _known]
    if missing:
        first = specs[keys.index(missing[0])][1]
        _remember(zip(missing, _count(missing, first), strict=True))
    with _lock:
        answers = [_known[key] for key in keys]
    for (_spec, param), answer in zip(specs, answers, strict=True):
        if "error" in answer:
            raise invalid_config(param, answer["error"])
    return [spec.model_copy(update=answer) for (spec, _param), answer in zip(specs, answers, strict=True)]


def invalid_config(param: str, reason: str) -> RequestError:
    return unprocessable(
        "invalid_model_config",
        f"{param} is no model transformers can build: {reason}. Check the config's fields against the "
        "model type's configuration class in the transformers documentation.",
        param=param,
    )


def _remember(answers) -> None:
    with _lock:
        for key, answer in answers:
            _known[key] = answer
            _known.move_to_end(key)
        while len(_known) > KEPT_SIZES:
            _known.popitem(last=False)


def _count(spec_jsons: list[str], param: str) -> list[dict]:
    """One child's answers for the specs; a failure of the child itself is a 422 naming `param`."""
    documents = "[" + ",".join(spec_jsons) + "]"
    with _slots:
        try:
            run = subprocess.run(
                [sys.executable, "-m", "engine.models.hf.sizing"],
                input=documents,
                capture_output=True,
                text=True,
                timeout=SIZING_SECONDS,
            )
        except subprocess.TimeoutExpired:
            raise invalid_config(param, f"building it took over {SIZING_SECONDS:g} s") from None
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines()
        raise invalid_config(param, lines[-1] if lines else f"the sizing process ended with {run.returncode}")
    return [
        answer if "error" in answer else {name: int(answer[name]) for name in COUNTED}
        for answer in json.loads(run.stdout)
    ]
