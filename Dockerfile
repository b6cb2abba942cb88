# One image for both Dom0 services, judicator-exporter and judicator-remediator.
#
# Why one image: they are one Python distribution with the same dependencies, and both must
# carry the same Xen toolstack (xl, xenperf, libxenctrl) as the host's hypervisor. Two images
# would ship that toolstack twice and could drift apart. compose.yaml picks the program and
# the privileges per service.
#
# The toolstack in the image must match the hypervisor it drives: libxenctrl's ABI changes
# between Xen releases, and Debian's /usr/sbin/xl and /usr/sbin/xenperf wrappers refuse to run
# when /usr/lib/xen-<running version> is missing. The defaults fit a Debian 12 Dom0 (Xen 4.17);
# for another Dom0, build with the Debian release that ships its Xen, e.g.
#   docker build --build-arg DEBIAN_RELEASE=trixie --build-arg XEN_VERSION=4.20 .

ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE}-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only the product: the simulator (xensim/) and the tests stay out of the image.
COPY pyproject.toml README.md ./
COPY xentools/ xentools/
COPY kvmtools/ kvmtools/
COPY exporter/ exporter/
COPY remediator/ remediator/
# The distribution also declares the simulator's judicator-sim and the operators' judicator-policy
# (run against Prometheus, not on a Dom0); without xensim/ and policylearn/ those scripts could
# only fail, so they do not stay in the image.
RUN python3 -m venv /opt/judicator \
 && /opt/judicator/bin/pip install --no-cache-dir /src \
 && rm /opt/judicator/bin/judicator-sim /opt/judicator/bin/judicator-policy

FROM debian:${DEBIAN_RELEASE}-slim
ARG XEN_VERSION=4.17
# python3 runs the venv built above (same Debian release, same interpreter path);
# xen-utils-<version> brings xl, xenperf and libxenctrl; iproute2 brings tc and ip.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 "xen-utils-${XEN_VERSION}" iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/judicator /opt/judicator
ENV PATH=/opt/judicator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Root, on purpose: xl and libxenctrl open /dev/xen/privcmd and the xenstore socket, which are
# root's alone in Dom0. compose.yaml drops every capability the services do not need.
USER root
EXPOSE 10170 10171
CMD ["judicator-exporter", "--help"]
