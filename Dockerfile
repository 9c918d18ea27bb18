# One image for both processes of registry-janitor:
#   api:    the default CMD (gunicorn serving service:create_app())
#   worker: `python -m worker` (needs the Docker socket of the engine that runs the registry)
# BASE_IMAGE: any Debian-like image with python3 (3.11+) and its venv module. python:3.11-slim by default;
# scripts/build-compose-images.sh builds on Debian's own python3 where no hub image can be pulled.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
# A different package index (a mirror, a proxy): docker build --build-arg PIP_INDEX_URL=...
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY pyproject.toml ./
# Into a virtualenv: the same on python:3.11-slim and on Debian's python3 (whose system pip refuses to install
# outside one, PEP 668). PATH puts its python, gunicorn and worker first. The dependencies first, from
# pyproject.toml alone (no package directory is there yet, so the project installs empty): a layer of its own,
# which a change to the code does not rebuild.
# README.md is the package's readme in pyproject.toml: this build needs one, and an empty one keeps a docs change
# from invalidating the layer (a change to the README rebuilt it, 84 s from PyPI).
RUN python3 -m venv /opt/venv \
    && touch README.md && pip install . && rm README.md \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin janitor
COPY janitor ./janitor
COPY service ./service
COPY worker ./worker
COPY cli ./cli
# Read by gunicorn from the working directory: metrics across workers, JSON logs with LOG_FORMAT=json, and
# JSON answers for the errors gunicorn sends itself.
COPY gunicorn.conf.py README.md ./
# The project itself, over the empty one: its dependencies are all there already.
RUN pip install --no-deps --force-reinstall .

# The API needs no privileges. The worker talks to the Docker socket, which belongs to root:docker on the
# host; docker-compose.yml runs it as root for that reason.
USER janitor
EXPOSE 8000

# gunicorn.conf.py runs WEB_CONCURRENCY processes (2) x GUNICORN_THREADS threads (8), so a slow listing holds up
# nothing else. Extra gunicorn options (timeouts, ...) go in GUNICORN_CMD_ARGS, which gunicorn reads itself.
CMD ["gunicorn", "-b", "0.0.0.0:8000", "service:create_app()"]
