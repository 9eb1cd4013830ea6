"""Gates evaluated on a job's final metrics, checked by hand."""

from core.gates import Gate, evaluate, summary

METRICS = {"student": {"accuracy": 0.93, "parameters": 340}, "teacher": {"accuracy": None},
           "compression": 16.2, "agreement": 0.97}  # fmt: skip


def gate(metric: str, op: str, value: float) -> Gate:
    return Gate(metric=metric, op=op, value=value)


def test_each_operator_compares_the_metric_with_the_threshold():
    results = evaluate(
        [gate("student.accuracy", ">=", 0.93), gate("student.accuracy", ">", 0.93),
         gate("compression", "<=", 16.2), gate("student.parameters", "<", 340), gate("agreement", ">", 0.9)],
        METRICS,
    )  # fmt: skip
    assert [r["passed"] for r in results] == [True, False, True, False, True]
    assert results[0] == {
        "metric": "student.accuracy",
        "op": ">=",
        "threshold": 0.93,
        "value": 0.93,
        "passed": True,
    }


def test_a_metric_that_was_not_measured_fails_its_gate():
    (teacher, int8) = evaluate(
        [gate("teacher.accuracy", ">=", 0.0), gate("int8.accuracy", ">=", 0.0)], METRICS
    )
    assert teacher["value"] is None and not teacher["passed"]
    assert int8["value"] is None and not int8["passed"]


def test_the_summary_says_each_gate_and_how_many_passed():
    results = evaluate([gate("compression", ">=", 20), gate("student.accuracy", ">=", 0.9)], METRICS)
    assert summary(results) == (
        "Gates: 1 of 2 passed: compression 16.2 >= 20 failed; student.accuracy 0.93 >= 0.9 passed."
    )


def test_a_causal_language_models_perplexity_and_kl_are_gated():
    metrics = {"task": "causal-lm", "student": {"perplexity": 15.0, "accuracy": 0.37},
               "teacher": {"perplexity": 12.3}, "kl_to_teacher": 0.31, "agreement": 0.62}  # fmt: skip
    results = evaluate(
        [
            gate("student.perplexity", "<=", 16),
            gate("teacher.perplexity", "<", 12),
            gate("kl_to_teacher", "<", 0.5),
        ],
        metrics,
    )
    assert [(r["value"], r["passed"]) for r in results] == [(15.0, True), (12.3, False), (0.31, True)]
