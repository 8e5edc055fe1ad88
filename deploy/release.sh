#!/usr/bin/env bash
# One release: render the overlay, apply the config and run the migration Job, and only once
# it has succeeded apply the rest, so no pod of the new release starts on an old schema.
# Usage: deploy/release.sh deploy/overlays/production   (kubectl's context picks the cluster)
set -euo pipefail

overlay=${1:?usage: deploy/release.sh deploy/overlays/<name>}
# The Job stops itself after activeDeadlineSeconds (900 s); this waits a little longer.
timeout=${MIGRATE_TIMEOUT_SECONDS:-960}
manifests=$(mktemp)
trap 'rm -f "$manifests"' EXIT

kubectl kustomize "$overlay" >"$manifests"
namespace=$(sed -n 's/^  namespace: //p' "$manifests" | sort -u)
[[ $(wc -l <<<"$namespace") == 1 && -n $namespace ]] || {
  echo "expected one namespace in $overlay, got: $namespace" >&2
  exit 2
}

# 1. The config the Job reads, the Job's network policy, then the Job itself. A Job's pod
#    template cannot change, so the previous release's Job goes first.
kubectl -n "$namespace" delete job ai-eng-api-migrate --ignore-not-found --wait
kubectl apply -f "$manifests" -l 'app.kubernetes.io/component in (config,migrate)'
# Until the Job has completed or failed (kubectl wait watches for one condition only).
deadline=$((SECONDS + timeout))
while :; do
  conditions=$(kubectl -n "$namespace" get job/ai-eng-api-migrate \
    -o 'jsonpath={range .status.conditions[?(@.status=="True")]}{.type} {end}') || conditions=
  case " $conditions " in
    *" Complete "*) break ;;
    *" Failed "*) failed="the Job failed" ;;
    *) ((SECONDS < deadline)) || failed="the Job did not finish in ${timeout} s" ;;
  esac
  if [[ -n ${failed:-} ]]; then
    kubectl -n "$namespace" logs job/ai-eng-api-migrate --tail=50 >&2 || true
    echo "migration not done ($failed): nothing else applied" >&2
    exit 1
  fi
  sleep 5
done

# 2. Everything: the Deployments roll (the API one pod at a time, never below its count).
kubectl apply -f "$manifests"
kubectl -n "$namespace" rollout status deployment/ai-eng-api-api --timeout=10m
kubectl -n "$namespace" rollout status deployment/ai-eng-api-worker --timeout=10m
