# syntax=docker/dockerfile:1.7
# LesionSearch images: `web` (gunicorn) and `worker` (Celery), CPU by default.
#   docker build --target web -t lesionsearch-web .
#   docker build --target worker --build-arg TORCH_VARIANT=cu128 -t lesionsearch-worker-gpu .
# TORCH_VARIANT picks the PyTorch wheel index (cpu, cu126, cu128, ...). PyPI's own torch
# wheels for Linux are CUDA builds of several GB, so the CPU image installs torch and
# torchvision from the CPU index first; requirements.txt pins the same versions.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/${TORCH_VARIANT}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=lesionsearch.settings \
    LESIONSEARCH_VAR_DIR=/var/lib/lesionsearch \
    MEDIA_ROOT=/var/lib/lesionsearch/media \
    STATIC_ROOT=/opt/lesionsearch/staticfiles
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /opt/lesionsearch --uid 10001 lesionsearch \
 && mkdir -p /var/lib/lesionsearch/media \
 && chown -R lesionsearch /var/lib/lesionsearch
WORKDIR /opt/lesionsearch/app
COPY requirements.txt .
RUN pip install --index-url "${TORCH_INDEX}" "torch==2.13.0" "torchvision==0.28.0" \
 && pip install -r requirements.txt
COPY --chown=lesionsearch . .
# collectstatic needs settings that load; these values exist only during the build.
RUN DEBUG=false SECRET_KEY=build-only ALLOWED_HOSTS=build CELERY_BROKER_URL=redis://build:6379/0 \
    python manage.py collectstatic --no-input -v 0
USER lesionsearch
VOLUME ["/var/lib/lesionsearch"]
ENTRYPOINT ["/usr/bin/tini", "--"]

FROM base AS web
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"
CMD ["sh", "-c", "python manage.py migrate --no-input && exec gunicorn lesionsearch.wsgi:application --bind 0.0.0.0:8000 --workers ${WEB_CONCURRENCY:-3} --threads ${WEB_THREADS:-4} --timeout 60 --access-logfile -"]

FROM base AS worker
# One process per worker container: a model in memory per process is expensive.
# One BLAS thread: exact search is one small matrix-vector product per query, which a second
# BLAS thread only slows down on a busy machine (torch keeps its own thread pool).
ENV OPENBLAS_NUM_THREADS=1
CMD ["sh", "-c", "exec celery -A lesionsearch worker -Q ${WORKER_QUEUES:-inference,light,training} --concurrency ${WORKER_CONCURRENCY:-1} --loglevel INFO --hostname worker@%h"]
