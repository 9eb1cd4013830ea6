"""What a job's run hands back: its final metrics, the series it reported and the artifacts it wrote."""

from dataclasses import dataclass
from pathlib import Path


@dataclass
class DistillResult:
    metrics: dict  # a classifier's `evaluate.final_metrics`, a language model's `lm_pipeline.lm_metrics`
    series: list[dict]  # {"step", "epoch", "name", "value"} for everything passed to reporter.metrics
    artifacts: dict[str, Path]  # student.safetensors, student.json, student.pt2, student.hf.zip, metrics.json
    headline: str = ""  # how the student did, in words, for the event that ends the job
