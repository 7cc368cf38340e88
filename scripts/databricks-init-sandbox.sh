#!/bin/bash
# Databricks cluster init script: bubblewrap on every node, for the sandbox of jobs/evaluate.py.
#
# Upload it as a workspace file or to a volume, then add it to the cluster (Advanced options >
# Init scripts). It runs as root on each node before Spark starts. Without bubblewrap the
# sandbox falls back to util-linux `unshare`; without either, the evaluate job refuses to run
# generated code. The check at the end only reports: it never stops the cluster from starting.
set -uo pipefail

if ! command -v bwrap >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
fi

if bwrap --unshare-net --unshare-pid --unshare-ipc --unshare-uts --ro-bind / / --proc /proc --dev /dev \
    --tmpfs /tmp --die-with-parent -- /bin/true; then
  echo "sandbox: bubblewrap works on $(hostname)"
else
  echo "sandbox: bubblewrap cannot create namespaces on $(hostname): jobs/evaluate.py will try unshare," \
       "then refuse (or run with --allow-weak-sandbox)" >&2
fi
exit 0
