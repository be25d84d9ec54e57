#!/usr/bin/env bash
# The README's first command, on a fresh machine: install into ./.venv, start a local emulated
# heterogeneous Ray cluster (cluster_configs/laptop.yaml: a head plus one Ray node per config node,
# each labelled by its accelerator type), serve hetserve.app:build on it, wait for /health and
# send one completion. Extra arguments go to the app as key=value (e.g. time_scale=0.1).
#
# Environment: HETSERVE_HTTP_PORT (default 8000), HETSERVE_STATE_FILE (default
# ~/.hetserve/local_cluster.json), HETSERVE_CLUSTER (default cluster_configs/laptop.yaml),
# HETSERVE_DEMO_TIMEOUT_S (default 300).
# Stop everything with `hetserve cluster down` (it stops exactly the processes `up` started).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${HETSERVE_HTTP_PORT:-8000}
STATE_FILE=${HETSERVE_STATE_FILE:-$HOME/.hetserve/local_cluster.json}
CLUSTER=${HETSERVE_CLUSTER:-cluster_configs/laptop.yaml}
TIMEOUT_S=${HETSERVE_DEMO_TIMEOUT_S:-300}
echo "== installing into .venv (emulated engines only: no vLLM)"
HETSERVE_SKIP_VLLM=1 bash scripts/install.sh
BIN=$PWD/.venv/bin

if "$BIN/hetserve" cluster status --state-file "$STATE_FILE" >/dev/null 2>&1; then
  echo "== reusing the local cluster recorded in $STATE_FILE"
else
  echo "== starting the local cluster from $CLUSTER"
  "$BIN/hetserve" cluster up "$CLUSTER" --state-file "$STATE_FILE"
fi
"$BIN/hetserve" cluster status --state-file "$STATE_FILE"
# RAY_ADDRESS and Ray's token auth settings (the cluster's Ray ports are locked with a token).
eval "$("$BIN/hetserve" cluster env --state-file "$STATE_FILE")"
ADDRESS=$RAY_ADDRESS
DASHBOARD=$("$BIN/python" -c "import sys; from hetserve.localcluster import load_local_cluster; print(load_local_cluster(sys.argv[1]).dashboard_url or 'off (cluster up --no-dashboard)')" "$STATE_FILE")

echo "== serving hetserve.app:build on $ADDRESS, HTTP on 127.0.0.1:$PORT"
# One HTTP proxy, on the head: every local node shares this host and its port.
"$BIN/serve" start --address "$ADDRESS" --proxy-location HeadOnly --http-host 127.0.0.1 --http-port "$PORT"
"$BIN/serve" run --non-blocking --address "$ADDRESS" hetserve.app:build "$@"

echo "== waiting for http://127.0.0.1:$PORT/health"
deadline=$(( $(date +%s) + TIMEOUT_S ))
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "no healthy answer from /health after ${TIMEOUT_S} s; the Serve logs are under the Ray temp dir's session_latest/logs/serve" >&2
    curl -s "http://127.0.0.1:$PORT/health" >&2 || true
    exit 1
  fi
  sleep 2
done
curl -s "http://127.0.0.1:$PORT/health"; echo

REQUEST='{"model": "llama-3.1-8b", "prompt": "Hello", "max_tokens": 16}'
echo "== one completion"
curl -s "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' -d "$REQUEST"; echo

cat <<EOF

hetserve is serving on http://127.0.0.1:$PORT (Ray cluster $ADDRESS).
Ray dashboard: $DASHBOARD  (Serve tab: one deployment per planned configuration + the router;
  it asks once for the Ray token: the contents of ${RAY_AUTH_TOKEN_PATH:-(auth off)})
Ray clients (serve, ray, python): eval "\$($BIN/hetserve cluster env --state-file $STATE_FILE)"
  curl localhost:$PORT/v1/completions -H 'Content-Type: application/json' -d '$REQUEST'
  curl localhost:$PORT/v1/hetserve/instances     # per instance: accelerator, capacity, outstanding work, KV
  curl localhost:$PORT/v1/hetserve/plan          # the deployment plan
  $BIN/hetserve cluster status --state-file $STATE_FILE
Stop everything:
  $BIN/hetserve cluster down --state-file $STATE_FILE
EOF
