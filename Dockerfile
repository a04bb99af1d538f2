# syntax=docker/dockerfile:1
# Install steps mirror the Makefile's: pinned, hashed requirements, then the package itself.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-deps --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY auth_service ./auth_service
COPY migrations ./migrations
# A wheel install carries migrations/ inside the package (pyproject: force-include).
RUN /opt/venv/bin/pip install --no-deps .

FROM python:3.11-slim-bookworm
# Production by default: the secret key (AUTH_SECRET_KEY_FILE naming a container secret, or
# AUTH_SECRET_KEY) and an https AUTH_ISSUER must be given, so the key that encrypts the
# signing keys never sits in the volume beside them.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AUTH_ENV=production \
    AUTH_DATABASE_URL=sqlite:////data/auth.db
RUN groupadd --system --gid 10001 auth \
    && useradd --system --uid 10001 --gid auth --no-create-home --shell /usr/sbin/nologin auth \
    && mkdir /data \
    && chown auth:auth /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /data
USER 10001:10001
# Safe to publish: header size, header and body timeouts, keep-alive and connection limits
# are on by default (AUTH_HTTP_*); TLS and per-client limits belong to a proxy in front
# (docs/operations/exposure.md), which AUTH_TRUSTED_PROXIES then names.
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
CMD ["auth-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
