#!/bin/sh
# PID 1 of the Node.js runtime's container: makes the server's fds 1 and 2 two named pipes (the
# server reads the function's output from them, and removes them once open), starts the server
# and reaps what the function's processes leave (an orphan is re-parented to PID 1, and Node
# cannot wait for a process it did not start: as PID 1 it would keep every one as a zombie,
# holding a pid of the container's limit). The shell waits for any child while it waits for the
# server. SIGTERM and SIGINT are passed on to the server; its exit status is the container's.
#
# V8's --interrupt-budget=8192: a hot function is optimised after less of its bytecode has run
# (V8's default budget suits long-running servers: a function's warm runs would take twice as
# long for its first thousand calls or more).
out=/tmp/.spinlet-stdout
err=/tmp/.spinlet-stderr
mkfifo -m 600 "$out" "$err" || exit 1
node --interrupt-budget=8192 /opt/spinlet/server.js --fifos "$out" "$err" 1<>"$out" 2<>"$err" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM
trap 'kill -INT "$server" 2>/dev/null' INT
status=0
while kill -0 "$server" 2>/dev/null; do
    wait "$server"
    status=$?
done
exit "$status"
