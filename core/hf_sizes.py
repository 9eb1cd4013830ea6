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
from typing import NamedTuple

from core.errors import RequestError, unprocessable
from engine.plan.specs import HFSpec, LoraConfig

SIZING_SECONDS = 60.0
CONCURRENT_SIZINGS = 2  # each child holds torch and transformers, some 400 MB
KEPT_SIZES = 256
COUNTED = {"parameters", "activation_floats"}
_slots = threading.BoundedSemaphore(CONCURRENT_SIZINGS)
_lock = threading.Lock()
_known: OrderedDict[str, dict] = OrderedDict()  # a model's document (without its sizes) -> its sizes or error


class Model(NamedTuple):
    """A transformers model of a request: its spec, the request's field it came from, its LoRA adapters."""

    spec: HFSpec
    param: str
    lora: LoraConfig | None = None


def measured(models: list[Model]) -> list[Model]:
    """Each model with its `parameters` and `activation_floats` (and its adapters' `parameters`) counted here,
    whatever the request said; a 422 naming the field of one transformers cannot build."""
    keys = [_document(model) for model in models]
    with _lock:
        missing = [key for key in dict.fromkeys(keys) if key not in _known]
    if missing:
        first = models[keys.index(missing[0])].param
        _remember(zip(missing, _count(missing, first), strict=True))
    with _lock:
        answers = [_known[key] for key in keys]
    for model, answer in zip(models, answers, strict=True):
        if "error" in answer:
            raise invalid_config(model.param, answer["error"])
    return [_counted(model, answer) for model, answer in zip(models, answers, strict=True)]


def _document(model: Model) -> str:
    """What the child measures, as JSON: also the key its answer is kept by."""
    spec = model.spec.model_dump_json(exclude=COUNTED)
    lora = "null" if model.lora is None else model.lora.model_dump_json(exclude={"parameters"})
    return f'{{"spec": {spec}, "lora": {lora}}}'


def _counted(model: Model, answer: dict) -> Model:
    spec = model.spec.model_copy(update={name: answer[name] for name in COUNTED})
    lora = model.lora and model.lora.model_copy(update={"parameters": answer["adapter_parameters"]})
    return model._replace(spec=spec, lora=lora)


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


def _count(documents: list[str], param: str) -> list[dict]:
    """One child's answers for the models; a failure of the child itself is a 422 naming `param`."""
    documents = "[" + ",".join(documents) + "]"
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
    return json.loads(run.stdout)
