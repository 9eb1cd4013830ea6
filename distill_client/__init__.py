"""The Python client of the distill service: `Client(url, api_key)`, for scripts and CI pipelines.

Needs httpx only: no torch, FastAPI or Celery (`pip install ./distill_client`)."""

from distill_client.client import Client
from distill_client.errors import APIError, DistillError, DownloadCorrupt, WaitTimeout
from distill_client.model_folder import ModelFolderError, unpack_model_folder
from distill_client.objects import TERMINAL, Artifact, Event, File, Job, MetricPoint

__all__ = ["Client", "APIError", "DistillError", "DownloadCorrupt", "WaitTimeout"]
__all__ += ["TERMINAL", "Artifact", "Event", "File", "Job", "MetricPoint"]
__all__ += ["ModelFolderError", "unpack_model_folder"]
