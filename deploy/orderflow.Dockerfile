# orderflow's image for deploy/kubernetes/ (the `orderflow_image` parameter):
#
#   docker build -f deploy/orderflow.Dockerfile -t registry.example.com/orderflow:0.1.0 .
#
# Built from the repository root: obskit and orderflow are installed from this tree. It runs as
# user 10001 (the manifests' runAsUser) on a read-only root filesystem: Python writes no
# bytecode at run time, and /tmp is an emptyDir.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY obskit ./obskit
COPY examples/orderflow ./examples/orderflow
RUN python -m venv /opt/orderflow \
 && /opt/orderflow/bin/pip install --no-cache-dir . ./examples/orderflow \
 && /opt/orderflow/bin/python -m compileall -q /opt/orderflow

FROM python:3.11-slim-bookworm
COPY --from=build /opt/orderflow /opt/orderflow
RUN groupadd --gid 10001 orderflow && useradd --uid 10001 --gid 10001 --no-create-home orderflow
ENV PATH=/opt/orderflow/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["orderflow"]
