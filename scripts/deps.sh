# Sourced by demo.sh and test.sh: installs the Debian packages the build needs
# when they are missing (as root), or prints the command and stops.
pmap_install_deps() {
  local pkgs=(cmake make g++ pkg-config libsqlite3-dev nlohmann-json3-dev libabsl-dev libcli11-dev "$@")
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local cmd="apt-get install -y --no-install-recommends --no-upgrade ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "persistent-map needs these Debian packages: ${missing[*]}" >&2
    echo "Install them with:  sudo apt-get update && sudo $cmd" >&2
    exit 1
  fi
  echo "==> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null >/dev/null
  apt-get install -y -qq --no-install-recommends --no-upgrade "${missing[@]}" </dev/null >/dev/null
}
