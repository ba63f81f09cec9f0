# Feature Gateway: multi-stage build; the final image has no compilers and runs as a non-root user.
# Validated offline (hadolint) with the operations issue; build with `docker build -t feature-gateway .`.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-compile .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home gateway
COPY --from=build /opt/venv /opt/venv
COPY config /etc/feature-gateway
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8700 8701
HEALTHCHECK --interval=10s --timeout=2s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8700/healthz', timeout=1).status == 200 else 1)"]
ENTRYPOINT ["feature-gateway", "serve"]
CMD ["--config", "/etc/feature-gateway/gateway.example.toml"]
