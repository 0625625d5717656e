#!/usr/bin/env bash
# One command for a single machine: set up .venv, then start a Redis-compatible server
# (append-only persistence under $DATA_DIR/redis), the API (whose processes, API_WORKERS, own the embedded
# Qdrant shards under $DATA_DIR), the Celery ingest worker and the event consumer.
# Ctrl-C stops every process this script started, and nothing else.
#
# Environment: API_PORT (8000), REDIS_PORT (6379), DATA_DIR (.data), MODELS_DIR (./models_data),
# FEED_MEDIA=1 to install the media extra (images, video, audio; scripts/prepare_models.sh does
# too), and the engine's own variables (README). With REDIS_URL set, no local server is started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh ${FEED_MEDIA:+media}

export DATA_DIR="${DATA_DIR:-$PWD/.data}"
export API_PORT="${API_PORT:-8000}"
export MODELS_DIR="${MODELS_DIR:-$PWD/models_data}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$DATA_DIR/logs"
PY=.venv/bin/python
pids=()

cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping ${#pids[@]} processes..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped"
  exit 0
}
trap cleanup INT TERM EXIT

if [ -z "${REDIS_URL:-}" ]; then
  REDIS_PORT="${REDIS_PORT:-6379}"
  mkdir -p "$DATA_DIR/redis"
  # shellcheck disable=SC2046
  $($PY -c "from feed.redis_server import server_args; from pathlib import Path; print(' '.join(server_args($REDIS_PORT, Path('$DATA_DIR/redis'))))") \
    >"$DATA_DIR/logs/redis.log" 2>&1 &
  pids+=($!)
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  for _ in $(seq 100); do
    $PY -c "import redis,sys; redis.Redis.from_url('$REDIS_URL').ping()" 2>/dev/null && break
    sleep 0.1
  done
fi

.venv/bin/feed-api >"$DATA_DIR/logs/api.log" 2>&1 &
pids+=($!)
# --beat: this worker also runs the schedule (a retrain check every RETRAIN_CHECK_EVERY_S; a due
# retrain runs in a child process, so ingestion goes on)
.venv/bin/feed-worker --beat --schedule "$DATA_DIR/celerybeat-schedule" >"$DATA_DIR/logs/worker.log" 2>&1 &
worker_pid=$!
pids+=($worker_pid)
.venv/bin/feed-consumer >"$DATA_DIR/logs/consumer.log" 2>&1 &
pids+=($!)

for _ in $(seq 300); do
  if $PY -c "import httpx; httpx.get('http://127.0.0.1:$API_PORT/health').raise_for_status()" 2>/dev/null; then
    break
  fi
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "a process exited early; see $DATA_DIR/logs/"; exit 1; }
  done
  sleep 0.2
done
# the worker logs "ready." once its text encoder is loaded and it takes tasks
for _ in $(seq 600); do
  grep -q " ready\.$" "$DATA_DIR/logs/worker.log" 2>/dev/null && break
  kill -0 "$worker_pid" 2>/dev/null || { echo "the ingest worker exited; see $DATA_DIR/logs/worker.log"; exit 1; }
  sleep 0.2
done
echo "feed engine running: API at http://127.0.0.1:$API_PORT (OpenAPI: /schema), Redis at $REDIS_URL"
if ! grep -q "media_model_unavailable" "$DATA_DIR/logs/worker.log"; then
  echo "image, video and audio posts: on (models in $MODELS_DIR)"
else
  echo "image, video and audio posts: off until their models are in $MODELS_DIR (scripts/prepare_models.sh)"
fi
echo "logs in $DATA_DIR/logs/; press Ctrl-C to stop"
wait -n "${pids[@]}" || true
echo "a process exited; see $DATA_DIR/logs/"
