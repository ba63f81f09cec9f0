# Feature Gateway container image.
#
# Two stages: `build` installs the package and its dependencies into a virtualenv; the final
# stage is a fresh slim Python with that virtualenv copied in, so no compiler, pip cache or
# build tree reaches it. The gateway runs as an unprivileged numeric user (Kubernetes'
# runAsNonRoot can verify it) and writes nothing to its filesystem, so it runs with a
# read-only root. Validated offline by tests/deploy (hadolint); see deploy/README.md.
#
#   docker build -t feature-gateway:0.1.0 .
#   docker run --rm -p 8700:8700 -e FGW_GATEWAY__LISTEN=0.0.0.0:8700 -e FGW_PEER_SECRET=... feature-gateway:0.1.0

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from the project metadata alone, so editing the code does not
# reinstall them. Every dependency ships a manylinux wheel: --only-binary makes a missing
# one fail here, loudly, instead of needing a compiler.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --only-binary=:all: -r requirements.txt
COPY gateway ./gateway
# pip compiles the bytecode here, so a read-only container does not recompile at every start.
RUN pip install --no-deps .

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="feature-gateway" \
      org.opencontainers.image.description="Regional data gateway for ML feature stores on DynamoDB global tables" \
      org.opencontainers.image.version="0.1.0"
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
# A default configuration; deployments mount their own at the same path (deploy/kubernetes).
COPY config/gateway.example.toml /etc/feature-gateway/gateway.toml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# 8700: downstream API, /healthz, /readyz, /metrics. 8701: peer API (writes forwarded between regions).
EXPOSE 8700 8701
# SIGTERM drains: readiness turns false, in-flight requests get gateway.shutdown_grace, exit 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=2s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8700/healthz', timeout=1)"]
ENTRYPOINT ["feature-gateway", "serve"]
CMD ["--config", "/etc/feature-gateway/gateway.toml"]
