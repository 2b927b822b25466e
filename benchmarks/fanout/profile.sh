#!/usr/bin/env bash
# Profile `quoteflow serve` under the fan-out load generator with py-spy (pip install py-spy).
#
#   benchmarks/fanout/profile.sh NAME C S T DURATION [RATE]
#   benchmarks/fanout/profile.sh S1 100 100 0.1 20 1000     # the S1 profile in benchmarks/README.md
#   benchmarks/fanout/profile.sh S3 10000 1 1 15 500        # the S3 one
#
# Server pinned to CPU 0, load generator to CPU 1 (as `run.py --server-cpus 0
# --loadgen-cpus 1`). py-spy samples the server during the measurement window only and
# writes /tmp/quoteflow-profile-NAME.raw; the summary (self and inclusive share of the
# non-idle samples per function and line) goes to stdout.
set -euo pipefail
NAME=$1 C=$2 S=$3 T=$4 D=$5 RATE=${6:-200}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PORT=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
ulimit -n "$(ulimit -Hn)"
cd "$ROOT"
[ -x "$HERE/loadgen/loadgen" ] || bash "$HERE/loadgen/build.sh" "$HERE/loadgen/loadgen"
taskset -c 0 quoteflow serve --universe "$S" --tick-interval "$T" --port "$PORT" \
    --max-connections 20000 --max-connections-per-ip 20000 --log-level warning \
    > "/tmp/quoteflow-profile-$NAME.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
sleep 2.5
WARMUP=3
taskset -c 1 "$HERE/loadgen/loadgen" -addr "127.0.0.1:$PORT" -path /stream -c "$C" \
    -duration "$D" -warmup "$WARMUP" > "/tmp/quoteflow-profile-$NAME.json" 2>/dev/null &
LOADGEN=$!
# Start sampling once the clients are connected and warm (ramp at 2000/s).
sleep "$(python -c "print($C / 2000 + $WARMUP + 0.5)")"
py-spy record -p "$SERVER" -d "$((D - 1))" -r "$RATE" -f raw \
    -o "/tmp/quoteflow-profile-$NAME.raw" --nonblocking > /dev/null 2>&1
wait "$LOADGEN"
python -c "
import json; r = json.load(open('/tmp/quoteflow-profile-$NAME.json'))
print(f\"# {r['connected']} connections, {r['ticks_per_second']:,.0f} ticks/s, p99 {r['latency']['p99_ms']} ms\")"
python "$HERE/pyspy_summary.py" "/tmp/quoteflow-profile-$NAME.raw"
