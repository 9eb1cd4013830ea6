# One image for the API and the workers. On a GPU host the same torch==2.13.0 pin resolves to the
# CUDA build from PyPI; `docker compose` reserves the GPU for the worker service.
FROM python:3.11-slim

WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock pyproject.toml ./
RUN pip install -r requirements.lock
COPY alembic.ini ./
COPY migrations ./migrations
COPY service ./service
COPY cli ./cli
COPY core ./core
COPY worker ./worker
COPY engine ./engine
COPY distill_client ./distill_client
RUN pip install --no-deps -e .

RUN useradd --create-home distill && mkdir -p /data && chown distill /data
USER distill
ENV DISTILL_HOME=/data
EXPOSE 8000
CMD ["distill", "api", "--host", "0.0.0.0", "--port", "8000"]
