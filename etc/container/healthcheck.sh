#!/bin/bash
# The clusterd image's HEALTHCHECK: GET /healthz from the master's metrics endpoint
# (daemon.metrics, port 9464 unless given). The master answers 200 when every program has a
# ready worker, else 503 with the reason ("web: 0/2 workers ready"), which is printed here
# so that `podman healthcheck run` and `docker inspect` show it. bash's /dev/tcp, because
# the slim base has no curl.
port=${1:-9464}
exec 3<>"/dev/tcp/127.0.0.1/$port" || { echo "nothing listens on 127.0.0.1:$port"; exit 1; }
printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
IFS=' ' read -r -t 4 _ status _ <&3 || { echo "no answer from /healthz"; exit 1; }
# The rest of the head, then the body (the master closes the connection after it).
while IFS= read -r -t 4 line <&3 && [ "$line" != $'\r' ]; do :; done
body=$(timeout 4 cat <&3)
echo "$status ${body:-}"
[ "$status" = 200 ]
