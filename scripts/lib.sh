# Shared by the scripts: install Debian packages that are missing.
# Usage: need_packages PKG...
need_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" > /dev/null
}

# Runs a swift build command, hiding per-file progress lines but keeping
# errors and warnings, and returns the build's own exit status.
quiet_build() {
  local rc_file rc
  rc_file=$(mktemp)
  { "$@" 2>&1 && echo 0 > "$rc_file" || echo $? > "$rc_file"; } |
    { grep -Ev '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Write|Linking|Applying|Wrapping)' || true; }
  rc=$(cat "$rc_file")
  rm -f "$rc_file"
  return "$rc"
}
