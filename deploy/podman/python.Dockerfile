# A local stand-in for python:3.11-slim, built on a Debian root made by debootstrap
# (scripts/container-test.sh imports it as localhost/quoteflow-debian:bookworm).
# Debian's python3 with a venv at /usr/local, so /usr/local/bin/python, pip and
# /usr/local/lib/python3.11/site-packages are where they are in the public image.
ARG DEBIAN_IMAGE=localhost/quoteflow-debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && python3 -m venv /usr/local \
 && rm -rf /root/.cache
ENV LANG=C.UTF-8
CMD ["python3"]
