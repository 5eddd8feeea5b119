#!/usr/bin/env bash
# Agent: curl (libssl.so.3 through SSL_write/SSL_read). One curl process per call, or with
# --multi one curl process for all calls (several URLs: one keep-alive connection).
# Flags are the Python agents' (see common.py); prints one JSON line per call, "pid" being the
# curl process that made it. The API key goes in a header file, never on curl's command line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${AB_PYTHON:-python3}"
multi=0
args=()
host=localhost port="" cafile="" plain=0 api=chat calls=1 stream=0 key="sk-test-AGENTBRAKE-SECRET-0001"
tag="" interval=0 timeout=30
while [ $# -gt 0 ]; do
  case "$1" in
    --multi) multi=1; shift; continue ;;
    --host) host="$2" ;;
    --port) port="$2" ;;
    --cafile) cafile="$2" ;;
    --api) api="$2" ;;
    -n|--calls) calls="$2" ;;
    --key) key="$2" ;;
    --tag) tag="$2" ;;
    --interval) interval="$2" ;;
    --timeout) timeout="$2" ;;
    --plain) plain=1; args+=("$1"); shift; continue ;;
    --stream) stream=1; args+=("$1"); shift; continue ;;
    --include-usage) args+=("$1"); shift; continue ;;
    --model|--max-tokens|--prompt-chars|--body-size) ;;
    *) echo "curl_agent.sh: unknown flag $1" >&2; exit 2 ;;
  esac
  args+=("$1" "$2"); shift 2
done
[ -n "$port" ] || { echo "curl_agent.sh: --port is required" >&2; exit 2; }
common_args=("${args[@]}" --host "$host" --port "$port" --api "$api")

work="$(mktemp -d /tmp/ab-curl-XXXXXX)"
trap 'rm -rf "$work"' EXIT
case "$api" in
  chat) path=/v1/chat/completions ;;
  responses) path=/v1/responses ;;
  anthropic) path=/v1/messages ;;
  *) echo "bad --api" >&2; exit 2 ;;
esac
{
  echo "Content-Type: application/json"
  if [ "$api" = anthropic ]; then
    echo "x-api-key: $key"; echo "anthropic-version: 2023-06-01"
  else
    echo "Authorization: Bearer $key"
  fi
  [ -z "$tag" ] || echo "x-test-client: $tag"
} > "$work/headers"
if [ "$plain" = 1 ]; then url="http://$host:$port$path"; tls=(); else url="https://$host:$port$path"; tls=(--cacert "$cafile"); fi
copts=(-sS --http1.1 --max-time "$timeout" -H "@$work/headers" "${tls[@]}")
[ "$stream" = 1 ] && copts+=(-N)
now() { date +%s.%N; }

if [ "$multi" = 0 ]; then
  for ((i = 0; i < calls; i++)); do
    [ "$i" -gt 0 ] && [ "$interval" != 0 ] && sleep "$interval"
    "$py" "$here/common.py" body "${common_args[@]}" --call "$i" > "$work/body$i"
    t0="$(now)"
    curl "${copts[@]}" --data-binary "@$work/body$i" -o "$work/out$i" -w '%{http_code}' "$url" > "$work/code$i" &
    cpid=$!
    wait "$cpid"
    t1="$(now)"
    "$py" "$here/common.py" emitfile "${common_args[@]}" --client curl --call "$i" --pid "$cpid" \
      --status "$(cat "$work/code$i")" --t0 "$t0" --t1 "$t1" --file "$work/out$i" --conn $((i + 1))
  done
else
  # One curl, N URLs: the same body for each; curl reuses the connection.
  "$py" "$here/common.py" body "${common_args[@]}" --call 0 > "$work/body"
  urlargs=()
  for ((i = 0; i < calls; i++)); do urlargs+=(-o "$work/out$i" "$url"); done
  t0="$(now)"
  curl "${copts[@]}" --data-binary "@$work/body" -w '%{http_code}\n' "${urlargs[@]}" > "$work/codes" &
  cpid=$!
  wait "$cpid"
  t1="$(now)"
  mapfile -t codes < "$work/codes"
  for ((i = 0; i < calls; i++)); do
    "$py" "$here/common.py" emitfile "${common_args[@]}" --client curl-multi --call "$i" --pid "$cpid" \
      --status "${codes[$i]}" --t0 "$t0" --t1 "$t1" --file "$work/out$i" --conn 1
  done
fi
