# otlp-stats image: `docker build -t otlp-stats .` from the repository root.
# Stage 1 builds the package and its runtime dependencies into a virtual environment;
# stage 2 copies only that environment onto a clean slim base and runs it as a non-root user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from: no tests, deploy files or tools reach the image.
# setup.py compiles proto/ into otlp_stats/_generated during the build.
COPY pyproject.toml setup.py README.md requirements.lock ./
COPY proto ./proto
COPY otlp_stats ./otlp_stats
# gcc and xxhash.h build the C wire scanner (otlp_stats/counting/_wire.c); they stay in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libxxhash-dev \
    && rm -rf /var/lib/apt/lists/*
# The runtime dependencies exactly as locked (versions and hashes), then the package alone: no
# extras, so the test and lint tools stay out. The build must produce the C scanner here: the
# import check below fails the image build if it did not.
RUN python -m venv /opt/otlp-stats \
    && /opt/otlp-stats/bin/pip install --no-cache-dir --require-hashes -r /src/requirements.lock \
    && /opt/otlp-stats/bin/pip install --no-cache-dir --no-deps /src
# From /, not /src: there the source folder otlp_stats/, which has no compiled counting/_wire,
# would come first on sys.path and shadow the installed package.
WORKDIR /
RUN /opt/otlp-stats/bin/python -c "import otlp_stats.counting._wire, otlp_stats.receiving._otlp_json"

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric UID, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
# /data is where a volume for the SQLite store goes (--store sqlite:///data/otlp-stats.db): an
# empty named volume mounted there takes this directory's owner, so the service can write it.
RUN groupadd --system --gid 10001 otlp-stats \
    && useradd --system --uid 10001 --gid otlp-stats --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin otlp-stats \
    && install -d -o 10001 -g 10001 -m 0750 /data
COPY --from=build /opt/otlp-stats /opt/otlp-stats
COPY deploy/docker/healthcheck.py /opt/otlp-stats/healthcheck.py
# The working directory is where the service looks for `.env`: mount one here if you like.
WORKDIR /srv/otlp-stats
# Every setting can be overridden with OTLP_STATS_<NAME>; these are the ones a container
# needs different from a laptop: listen on all interfaces, log JSON lines to stderr.
ENV PATH=/opt/otlp-stats/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OTLP_STATS_GRPC_LISTEN=0.0.0.0:4317 \
    OTLP_STATS_HTTP_LISTEN=0.0.0.0:4318 \
    OTLP_STATS_ADMIN_LISTEN=0.0.0.0:9464 \
    OTLP_STATS_LOG_FORMAT=json
USER 10001:10001
# OTLP/gRPC, OTLP/HTTP, and /metrics with the health endpoints.
EXPOSE 4317 4318 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "/opt/otlp-stats/healthcheck.py"]
# SIGTERM drains the queue and prints the last (partial) window within OTLP_STATS_SHUTDOWN_GRACE.
STOPSIGNAL SIGTERM
ENTRYPOINT ["otlp-stats"]
