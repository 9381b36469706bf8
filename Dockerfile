# The trio_sos image: one image for the S3 nodes (`serve`, the default) and the storage agents (`agent`).
#
#   docker build -t trio-sos:0.1.0 .        (or: podman build -t trio-sos:0.1.0 .)
#   docker run --rm -p 9000:9000 -p 9001:9001 trio-sos:0.1.0      # an embedded node: SQLite + a local agent
#
# Two stages: the first compiles the C agent (make, a C compiler and isa-l's headers, through `pip install .`,
# which runs setup.py's build_ext) into a virtual environment; the second copies that environment onto a clean
# base with only the runtime library the agent links against (libisal2). Deploying it: docs/kubernetes.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libisal-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/trio-sos
ENV PATH=/opt/trio-sos/bin:$PATH
WORKDIR /src
# only what the build needs (see .dockerignore): the package, the agent's C sources and the build files
COPY pyproject.toml setup.py README.md ./
COPY native/Makefile native/Makefile
COPY native/src native/src
COPY trio_sos trio_sos
RUN pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info
# fail the build here, not at the first `agent` start, if the agent program did not land in the package
RUN cd / && python -c "from trio_sos.agent.binary import agent_binary; print('agent:', agent_binary())" \
    && ldd "$(python -c 'from trio_sos.agent.binary import agent_binary; print(agent_binary())')"

FROM ${PYTHON_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends libisal2 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 trio-sos \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/trio-sos --no-create-home \
       --shell /usr/sbin/nologin trio-sos \
    && mkdir -p /var/lib/trio-sos /data \
    && chown 10001:10001 /var/lib/trio-sos /data
COPY --from=build /opt/trio-sos /opt/trio-sos
# the runtime image has every shared library the agent program links against
RUN agent="$(/opt/trio-sos/bin/python -c 'from trio_sos.agent.binary import agent_binary; print(agent_binary())')" \
    && ! ldd "$agent" | grep 'not found'
# PYTHONDONTWRITEBYTECODE: pip compiled the package already, and the root file system may be read-only.
# TRIO_SOS_DATA_DIR: an absolute data dir (the default is ./trio_sos-data), writable by the image's user.
ENV PATH=/opt/trio-sos/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRIO_SOS_DATA_DIR=/var/lib/trio-sos
# not a directory holding a trio_sos/ checkout: `python -m` puts the working directory first on sys.path
WORKDIR /var/lib/trio-sos
USER 10001:10001
# 9000: S3, 9001: the admin API (/health, /ready, /metrics), 7000: a storage agent
EXPOSE 9000 9001 7000
ENTRYPOINT ["python", "-m", "trio_sos"]
CMD ["serve", "--listen", "0.0.0.0:9000", "--admin-listen", "0.0.0.0:9001"]
