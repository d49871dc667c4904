# syntax=docker/dockerfile:1
# gradwatch image: gradwatchd (the monitor), gradwatch (the client) and gradwatch-train
# (the LibTorch trainer), built from Debian bookworm's packages only (no downloads at
# build time besides apt).
#
#   docker build -t gradwatch:0.1.0 .
#   docker run --rm gradwatch:0.1.0 gradwatchd --help
#
# The runtime stage carries libtorch for gradwatch-train, which makes the image large
# (~2 GB with its dependencies); the monitor and the client alone need only gRPC,
# protobuf, prometheus-cpp and SQLite.

# ---- build ------------------------------------------------------------------------------
FROM debian:bookworm AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src

# Dependencies first, so that this layer is cached across source changes.
COPY scripts/install-deps scripts/install-deps
RUN scripts/install-deps && rm -rf /var/lib/apt/lists/*

# Only what the build needs (not build/, tests/, bench/ or dashboards/).
COPY CMakeLists.txt ./
COPY proto proto
COPY server server
COPY trainer trainer
COPY client client

# ccache (installed by install-deps, picked up by CMakeLists.txt) keeps its cache in a
# BuildKit cache mount, so rebuilds after a source change are incremental.
RUN --mount=type=cache,target=/root/.cache/ccache \
    cmake -S . -B build -G Ninja \
      -DCMAKE_BUILD_TYPE=Release \
      -DGRADWATCH_WITH_TESTS=OFF \
      -DGRADWATCH_WITH_BENCH=OFF \
 && cmake --build build -j "$(nproc)" \
 && cmake --install build --prefix /opt/gradwatch --strip \
 && test -x /opt/gradwatch/bin/gradwatchd \
 && test -x /opt/gradwatch/bin/gradwatch \
 && test -x /opt/gradwatch/bin/gradwatch-train

# ---- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim
ENV DEBIAN_FRONTEND=noninteractive
# The shared libraries the three binaries link (readelf -d: NEEDED); apt brings in
# their own dependencies (libtorch's BLAS, OpenMP, ...).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
      libsqlite3-0 \
      libtorch1.13 libgloo0 \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/gradwatch/bin/ /usr/local/bin/

# Unprivileged user; /data holds the store (gradwatch.db). A named volume mounted there
# takes this ownership when it is first created.
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin gradwatch \
 && mkdir -p /data \
 && chown gradwatch:gradwatch /data
USER gradwatch
WORKDIR /data
VOLUME ["/data"]

# 7070: gRPC (telemetry from trainers, control and run queries, the gradwatch client)
# 9464: HTTP: Prometheus /metrics and the Alertmanager webhook /api/v1/alerts/webhook
EXPOSE 7070 9464

# Inside a container the monitor must listen on all interfaces to be reachable from the
# other services; publish the ports on the host's loopback only (docker-compose.yml).
CMD ["gradwatchd", "--listen", "0.0.0.0:7070", "--metrics-listen", "0.0.0.0:9464", "--data-dir", "/data"]
