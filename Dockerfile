# The demo service as an image; for your own service, copy it in and name its spec in CMD:
#   CMD ["run", "service.main:spec", "--health", "0.0.0.0:9000"]
# Exec form (JSON arrays) throughout: trio-supervise is PID 1 and gets SIGTERM itself. A
# shell form would make /bin/sh PID 1, which does not pass the signal on, and Kubernetes
# or `docker stop` would SIGKILL the service at the end of its grace period.
FROM python:3.11-slim
COPY . /src
RUN pip install --no-cache-dir "/src[http,websocket,metrics,postgres,export]" && rm -rf /src
WORKDIR /data
# What Kubernetes and `docker stop` send first; the tree's shutdown starts on it.
STOPSIGNAL SIGTERM
EXPOSE 8000 8001
ENTRYPOINT ["trio-supervise"]
CMD ["demo", "--host", "0.0.0.0"]
