#!/usr/bin/env bash
# The Debian package on this machine, without a running systemd: installs it, checks what it
# put where (the binary answers --version, the unit passes systemd-analyze verify and is not
# enabled, the config is 0640 root:hotfolder, the user exists), removes it (config and state
# stay), purges it (they go, the user is locked, nothing of the package is left), and purges it
# again from a trap when a check fails half-way.
#
# Usage: deb.sh HOTFOLDER.deb. Needs root and dpkg; exits 0 with a line saying why when they
# are not here. It changes the machine it runs on: only .ci/run calls it.
set -euo pipefail

deb=${1:?usage: deb.sh HOTFOLDER.deb}
skip() {
  echo "deb: skipped: $*"
  exit 0
}
fail() {
  echo "deb: FAILED: $*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || skip "needs root"
command -v dpkg >/dev/null 2>&1 || skip "dpkg is not installed"
if dpkg-query -W -f '${Status}' hotfolder 2>/dev/null | grep -q 'installed'; then
  skip "a hotfolder package is already installed here; not touching it"
fi

cleanup() {
  local status=$?
  if dpkg-query -W -f '${Status}' hotfolder 2>/dev/null | grep -Eq 'installed|config-files'; then
    dpkg --purge hotfolder >/dev/null 2>&1 || echo "deb: could not purge hotfolder" >&2
  fi
  exit "$status"
}
trap cleanup EXIT

# Depends: (ca-certificates, adduser, ...) are normally here; apt would fetch them otherwise.
dpkg -i "$deb" >/tmp/hotfolder-deb.log 2>&1 || {
  cat /tmp/hotfolder-deb.log >&2
  fail "dpkg -i $deb"
}
/usr/bin/hotfolder --version | grep -q '^hotfolder ' || fail "/usr/bin/hotfolder --version"
echo "deb: installed $(/usr/bin/hotfolder --version)"

unit=$(dpkg -L hotfolder | grep '/systemd/system/hotfolder.service$' | head -n 1)
[ -n "$unit" ] || fail "the package has no system unit"
if command -v systemd-analyze >/dev/null 2>&1; then
  verify=$(SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$unit" 2>&1 | grep hotfolder || true)
  [ -z "$verify" ] || fail "systemd-analyze verify $unit: $verify"
  echo "deb: systemd-analyze verify $unit: clean"
else
  echo "deb: systemd-analyze is not installed; the unit is not verified here"
fi
[ ! -e /etc/systemd/system/multi-user.target.wants/hotfolder.service ] || fail "the unit was enabled"
[ "$(stat -c '%a %U %G' /etc/hotfolder/config.toml)" = "640 root hotfolder" ] ||
  fail "/etc/hotfolder/config.toml is $(stat -c '%a %U %G' /etc/hotfolder/config.toml)"
getent passwd hotfolder | grep -q ':/usr/sbin/nologin$' || fail "no system user hotfolder"
/usr/bin/hotfolder completions bash | grep -q 'complete' || fail "completions bash"
echo "deb: unit not enabled, config 0640 root:hotfolder, user hotfolder"

files=$(dpkg -L hotfolder | while read -r path; do [ -f "$path" ] && echo "$path"; done)
dpkg --remove hotfolder >/tmp/hotfolder-deb.log 2>&1 || fail "dpkg --remove: $(cat /tmp/hotfolder-deb.log)"
[ -e /etc/hotfolder/config.toml ] || fail "dpkg --remove took the config"
[ ! -e /usr/bin/hotfolder ] || fail "dpkg --remove left /usr/bin/hotfolder"
dpkg --purge hotfolder >/tmp/hotfolder-deb.log 2>&1 || fail "dpkg --purge: $(cat /tmp/hotfolder-deb.log)"
for gone in /etc/hotfolder /var/lib/hotfolder /var/log/hotfolder $files; do
  [ ! -e "$gone" ] || fail "$gone is left after the purge"
done
[ "$(getent shadow hotfolder | cut -d: -f8)" = 1 ] || fail "the purge did not lock the user"
echo "deb: remove kept the config; purge left nothing of the package and locked the user"
