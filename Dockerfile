# One image for the whole platform: `herald migrate`, `herald run ingest|scheduler|pipeline|sender`,
# `herald tenant create NAME`. Compose and Kubernetes pick the command; the image never decides.
#
#   docker build -t herald:local .
#
# Both stages must start from the very same Python image: the virtualenv built in the first stage
# points at that image's interpreter (/usr/local/bin/python3.11) and is copied as-is.
ARG PYTHON_IMAGE=python:3.11-slim

# --------------------------------------------------------------------------------------------------
# builder: resolve nothing, install exactly what uv.lock says into /app/.venv
# --------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# uv comes from PyPI through pip, pinned, so the build needs no registry other than PyPI.
RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore uv==0.13.9

# UV_PYTHON / UV_PYTHON_DOWNLOADS: use the image's interpreter, never fetch a managed Python.
# UV_COMPILE_BYTECODE: write .pyc now; the runtime root filesystem is read-only (Kubernetes) so
#   Python could not cache them at start-up and every process would recompile on every start.
# UV_NO_CACHE: the builder stage is thrown away; a cache would only make its layers bigger.
ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1

WORKDIR /app

# Third-party dependencies first, in their own layer: it is rebuilt only when the lock changes,
# not on every code edit. --frozen installs exactly the versions in uv.lock and never re-resolves
# (a stale lock is CI's to catch, with `uv lock --check`).
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the project itself. --no-editable installs `herald`, `shared` and `services` into the venv's
# site-packages as a regular wheel (package data such as Alembic migration folders included), so
# the venv alone is the complete application and the runtime stage needs no source tree.
# README.md is read by the build backend (pyproject's `readme`).
COPY README.md ./
COPY herald ./herald
COPY shared ./shared
COPY services ./services
RUN uv sync --frozen --no-dev --no-editable

# --------------------------------------------------------------------------------------------------
# runtime: the interpreter, the venv, an unprivileged user; no uv, no compilers
# --------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="herald" \
      org.opencontainers.image.description="Self-hosted WhatsApp notification platform (ingest, scheduler, pipeline, sender, console)" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER, and the
# manifests pin runAsUser 10001 to match. The named account exists so that tools asking "who am I"
# (getpass, ps) get an answer; it has no home and no login shell.
RUN groupadd --system --gid 10001 herald \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin herald

# Copied without --chown: the application files stay owned by root, so the running process cannot
# modify its own code even where the root filesystem is writable (Compose without read_only).
COPY --from=builder /app/.venv /app/.venv

# PYTHONUNBUFFERED: logs reach `docker logs` / kubectl at once, not when a buffer fills or at exit.
# PYTHONDONTWRITEBYTECODE: bytecode was compiled at build time; don't try to write more at run time.
ENV PATH="/app/.venv/bin:${PATH}" \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
USER 10001:10001

# Documentation only: ingest, scheduler, pipeline, sender (each overridable, e.g. SENDER_PORT).
EXPOSE 8001 8002 8003 8004 8005

# Exec form: `herald` is PID 1 and receives SIGTERM itself, which starts the graceful drain of
# in-flight messages (HERALD_GRACEFUL_TIMEOUT_SECONDS). A shell wrapper would swallow the signal.
ENTRYPOINT ["herald"]
CMD ["run", "sender"]
