#!/bin/sh
# PID 1 of the Node.js runtime's container: starts the server and reaps what the function's
# processes leave (an orphan is re-parented to PID 1, and Node cannot wait for a process it did
# not start: as PID 1 it would keep every one as a zombie, holding a pid of the container's
# limit). The shell waits for any child while it waits for the server. SIGTERM and SIGINT are
# passed on to the server; its exit status is the container's.
node /opt/spinlet/server.js &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM
trap 'kill -INT "$server" 2>/dev/null' INT
status=0
while kill -0 "$server" 2>/dev/null; do
    wait "$server"
    status=$?
done
exit "$status"
