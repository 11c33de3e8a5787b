# syntax=docker/dockerfile:1
# PgBouncer for deploy/k8s/pgbouncer.yaml: Debian's package, from a release whose PgBouncer keeps
# prepared statements in transaction pooling (1.21 or later; trixie ships 1.24). Tagged with
# the package's version, never a floating tag:
#   docker build -f deploy/pgbouncer.Dockerfile -t ballast-pgbouncer:1.24.1 deploy/
FROM debian:trixie-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends pgbouncer \
 && rm -rf /var/lib/apt/lists/* \
 && pgbouncer --version
# A user of its own with a fixed id, so the pod can require a non-root user (runAsNonRoot).
RUN useradd --system --uid 10002 --no-create-home --shell /usr/sbin/nologin pgbouncer-run
USER 10002
EXPOSE 6432
ENTRYPOINT ["pgbouncer"]
CMD ["/etc/pgbouncer/pgbouncer.ini"]
