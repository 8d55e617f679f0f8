#!/usr/bin/env bash
# Idempotent set-up for envfarm on a Debian machine (run as root, as on our machines and in CI).
# Each step checks first and only acts when something is missing; a second run changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
changed=0
say() { printf 'setup: %s\n' "$*"; }
did() { changed=1; say "$*"; }

SOCK_PATH=/run/podman/podman.sock
APT_PKGS=(podman runc catatonit debootstrap chromium ffmpeg postgresql git curl docker-registry)
PG_URL_USER=envfarm PG_URL_PASS=envfarm PG_URL_DB=envfarm_test

# 1. Debian packages ----------------------------------------------------------------------------
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v kubectl >/dev/null || missing+=(kubernetes-client)
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (fix: run 'sudo make setup' or install them)" >&2; exit 1
  fi
  did "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Podman: runc runtime, no default ulimits (crun and the default ulimits fail on our machines) --
CONF=/etc/containers/containers.conf.d/50-envfarm.conf
WANT=$'[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"'
if [ "$(cat "$CONF" 2>/dev/null)" != "$WANT" ]; then
  mkdir -p "$(dirname "$CONF")"; printf '%s\n' "$WANT" > "$CONF"; did "wrote $CONF"
fi

# 2b. The loopback registry the import tests start (docker-registry on 127.0.0.1:5714) speaks plain HTTP:
#     mark it so for Podman (envfarm itself pulls from an http:// registry with Podman's per-request TLS switch).
REG_CONF=/etc/containers/registries.conf.d/50-envfarm-loopback.conf
REG_WANT=$'[[registry]]\nlocation = "127.0.0.1:5714"\ninsecure = true'
if [ "$(cat "$REG_CONF" 2>/dev/null)" != "$REG_WANT" ]; then
  mkdir -p "$(dirname "$REG_CONF")"; printf '%s\n' "$REG_WANT" > "$REG_CONF"; did "wrote $REG_CONF"
fi

# 3. The Docker-API socket (Podman's), unless DOCKER_HOST points at a working engine already --------
api_ok() { curl -sf --max-time 5 --unix-socket "$1" http://d/_ping >/dev/null 2>&1; }
if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST}" != "unix://$SOCK_PATH" ] && api_ok "${DOCKER_HOST#unix://}"; then
  say "using the engine at $DOCKER_HOST"
elif ! api_ok "$SOCK_PATH"; then
  mkdir -p "$(dirname "$SOCK_PATH")" /var/log/envfarm
  # From /: conmon writes files such as `oom` into the service's working directory.
  setsid nohup sh -c 'cd / && exec podman system service --time=0 "unix://$0"' "$SOCK_PATH" \
    >/var/log/envfarm/podman-service.log 2>&1 < /dev/null &
  for _ in $(seq 1 50); do api_ok "$SOCK_PATH" && break; sleep 0.2; done
  api_ok "$SOCK_PATH" || { echo "setup: podman system service did not answer on $SOCK_PATH (see /var/log/envfarm/podman-service.log)" >&2; exit 1; }
  did "started the Podman Docker-API service on unix://$SOCK_PATH"
fi

# 4. Python virtualenv with the locked dependencies ------------------------------------------------
stamp=.venv/.envfarm-installed
want_hash=$(cat requirements.lock pyproject.toml setup.py | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat $stamp 2>/dev/null)" != "$want_hash" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # torch first, by exact version, so pip takes the machine's CPU wheel instead of a CUDA build.
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -r requirements.lock
  # The project itself with the test extra and the integrations' extras (their tests run in make test), and any
  # direct dependency pyproject.toml names that the lock does not pin yet.
  .venv/bin/pip install -q -e ".[test,openenv,mini-swe-agent]"
  echo "$want_hash" > $stamp
  did "installed the virtualenv (.venv) from requirements.lock"
fi

# 4b. Prime Intellect's `verifiers` wheel (no dependencies), for the test that installs envfarm and it side by
#     side in a fresh venv without a network: the installed envfarm must not shadow that import name.
WHEELS=.venv/wheelhouse
if ! ls "$WHEELS"/verifiers-0.4.0-*.whl >/dev/null 2>&1; then
  .venv/bin/pip download -q --no-deps verifiers==0.4.0 -d "$WHEELS"
  did "downloaded verifiers==0.4.0 (Prime Intellect) into $WHEELS"
fi

# 5. Video for Playwright: link Debian's ffmpeg where Playwright looks for its own -------------------
if .venv/bin/python -c "import envfarm.verifiers.web.setup_ffmpeg" 2>/dev/null; then
  out=$(.venv/bin/python -m envfarm.verifiers.web.setup_ffmpeg)
  case "$out" in *created*|*linked*) did "$out";; esac
fi

# 6. PostgreSQL on localhost for the store's tests --------------------------------------------------
PG_VER=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
if [ -n "$PG_VER" ]; then
  if ! pg_lsclusters -h 2>/dev/null | grep -q "^$PG_VER main"; then
    pg_createcluster "$PG_VER" main >/dev/null; did "created PostgreSQL $PG_VER cluster"
  fi
  if ! pg_lsclusters -h | grep -q "^$PG_VER main .* online"; then
    pg_ctlcluster "$PG_VER" main start; did "started PostgreSQL $PG_VER"
  fi
  if ! su postgres -c "psql -tAc \"select 1 from pg_roles where rolname='$PG_URL_USER'\"" | grep -q 1; then
    su postgres -c "psql -qc \"create role $PG_URL_USER login password '$PG_URL_PASS'\""; did "created PostgreSQL role $PG_URL_USER"
  fi
  if ! su postgres -c "psql -tAc \"select 1 from pg_database where datname='$PG_URL_DB'\"" | grep -q 1; then
    su postgres -c "createdb -O $PG_URL_USER $PG_URL_DB"; did "created PostgreSQL database $PG_URL_DB"
  fi
fi

# 7. The base image, built from Debian packages (no registry is reachable) -------------------------
if ! .venv/bin/python -m envfarm.cli images has-base >/dev/null 2>&1; then
  DOCKER_HOST="${DOCKER_HOST:-unix://$SOCK_PATH}" .venv/bin/python -m envfarm.cli images build base
  changed=1
fi

# 8. Node's tooling layer over the base (Debian's nodejs + npm), for JavaScript/TypeScript tasks; a cache hit when built
node_tooling=$(DOCKER_HOST="${DOCKER_HOST:-unix://$SOCK_PATH}" .venv/bin/python -m envfarm.cli images build tooling --language javascript 2>&1) \
  || { echo "$node_tooling" | tail -n 20; echo "setup: building the Node tooling layer failed (see above)"; exit 1; }
case "$node_tooling" in *"cache hit"*) ;; *) did "built the Node tooling layer: $(echo "$node_tooling" | tail -n 1)"; changed=1 ;; esac

# 9. Go's and Rust's tooling layers over the base (Debian's golang-go; rustc + cargo), for Go and Rust tasks
for lang in go rust; do
  lang_tooling=$(DOCKER_HOST="${DOCKER_HOST:-unix://$SOCK_PATH}" .venv/bin/python -m envfarm.cli images build tooling --language $lang 2>&1) \
    || { echo "$lang_tooling" | tail -n 20; echo "setup: building the $lang tooling layer failed (see above)"; exit 1; }
  case "$lang_tooling" in *"cache hit"*) ;; *) did "built the $lang tooling layer: $(echo "$lang_tooling" | tail -n 1)"; changed=1 ;; esac
done

if [ "$changed" = 0 ]; then say "nothing to do: everything is installed and running"; fi
