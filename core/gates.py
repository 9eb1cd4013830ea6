"""Quality gates: a job request's conditions on its final metrics (`{"metric": "student.accuracy",
"op": ">=", "value": 0.9}`), checked at submission for their names and evaluated when the job ends.
A job whose gate fails still succeeds, with its artifacts; its metrics say which gates failed."""

import operator
from typing import Literal

from pydantic import Field

from engine.plan.specs import Spec

# A dotted path into the job's metrics: each is measured on the validation set. A causal language model's
# accuracy and agreement are next-token ones; its perplexities and `kl_to_teacher` (the mean token KL of the
# student's next-token distribution from the teacher's, in nats) are measured for it alone, and with its
# `alone_reference` the reference's perplexity and the share of the gap to the teacher distillation closed.
GateMetric = Literal[
    "student.accuracy",
    "teacher.accuracy",
    "student.perplexity",
    "teacher.perplexity",
    "kl_to_teacher",
    "alone.perplexity",
    "gap_closed",
    "agreement",
    "accuracy_retention",
    "compression",
    "student.parameters",
    "int8.accuracy",
    "student.latency_ms.batch_1",
    "student.latency_ms.batch_64",
    "speedup.batch_1",
    "speedup.batch_64",
]
LANGUAGE_MODEL_METRICS = ("student.perplexity", "teacher.perplexity", "kl_to_teacher")
ALONE_REFERENCE_METRICS = ("alone.perplexity", "gap_closed")  # with distillation.alone_reference
OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


class Gate(Spec):
    metric: GateMetric = Field(
        description="A final metric, as a dotted path into the job's `metrics`. `student.perplexity`, "
        "`teacher.perplexity` and `kl_to_teacher` (mean token KL(teacher || student), nats) are a causal "
        "language model's; its accuracy and agreement are next-token ones. `alone.perplexity` and "
        "`gap_closed` need `distillation.alone_reference`."
    )
    op: Literal[">=", ">", "<=", "<"]
    value: float = Field(allow_inf_nan=False, description="The threshold the metric is compared with.")


def evaluate(gates: list[Gate], metrics: dict) -> list[dict]:
    """Each gate with the metric's `value` (None when it was not measured, e.g. accuracy without labels),
    its `threshold` and whether it `passed`; a gate on an unmeasured metric fails."""
    results = []
    for gate in gates:
        value = _lookup(metrics, gate.metric)
        passed = value is not None and OPERATORS[gate.op](value, gate.value)
        results.append(
            {"metric": gate.metric, "op": gate.op, "threshold": gate.value, "value": value, "passed": passed}
        )
    return results


def summary(results: list[dict]) -> str:
    """The event a job's gates end with: `Gates: 1 of 2 passed: compression 3.2 >= 5 failed; ...`."""
    passed = sum(result["passed"] for result in results)
    return f"Gates: {passed} of {len(results)} passed: " + "; ".join(map(describe, results)) + "."


def describe(result: dict) -> str:
    """One evaluated gate in words: `compression 3.2 >= 5 failed`."""
    value = "not measured" if result["value"] is None else f"{result['value']:.6g}"
    verdict = "passed" if result["passed"] else "failed"
    return f"{result['metric']} {value} {result['op']} {result['threshold']:g} {verdict}"


def _lookup(metrics: dict, path: str) -> float | None:
    value = metrics
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, int | float) else None
