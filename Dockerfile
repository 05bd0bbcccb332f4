# The Timeline image: worker, feeder, API and the CLI (one image, several commands).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY dsl dsl
COPY workflows workflows
COPY activities activities
COPY feeder feeder
COPY producers producers
COPY timeline timeline
COPY bench bench
COPY examples examples
RUN pip install --no-cache-dir .
ENV TIMELINE_HOME=/data
VOLUME /data
ENTRYPOINT ["timeline"]
