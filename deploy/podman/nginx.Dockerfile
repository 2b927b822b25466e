# A local nginx image (Debian's nginx on the debootstrap root) for the container tests'
# scaled set-up; the configuration is deploy/nginx.conf, mounted at run time.
ARG DEBIAN_IMAGE=localhost/quoteflow-debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
EXPOSE 8080
STOPSIGNAL SIGQUIT
ENTRYPOINT ["nginx", "-g", "daemon off;", "-e", "stderr"]
