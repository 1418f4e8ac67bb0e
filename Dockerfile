# reimage: one image for every process (api, worker, beat, migrate, simulate).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs: no .git, local databases or virtualenvs end up in the image.
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY workers ./workers
COPY migrations ./migrations
RUN pip install . \
    && useradd --system --uid 10001 --create-home --shell /usr/sbin/nologin reimage

USER reimage
EXPOSE 8080
# Listen on all interfaces: the default 127.0.0.1 is unreachable from outside the container.
CMD ["reimage", "api", "--host", "0.0.0.0", "--port", "8080"]
