#!/usr/bin/env bash
# The Debian package under a real systemd: a minimal Debian root (debootstrap, cached between
# runs), booted with systemd-nspawn on a private network (loopback only), the .deb installed in
# it, and the agent driven with `nsenter ... systemctl` against the built-in emulator running in
# the same container. Shows that:
#   - the package installs the unit disabled and stopped, and it passes systemd-analyze verify;
#   - the unit becomes active only once the agent said READY;
#   - a file dropped into the watched folder reaches the emulator and done/;
#   - the log is in the journal with priorities and fields (FILE, VIDEO_ID), no timestamp of
#     its own and no copy in files; `journalctl -p err` finds an error the agent logged;
#   - `systemctl reload` (SIGHUP) adds a folder;
#   - an agent frozen with SIGSTOP is killed by the watchdog, restarted, and resumes its upload;
#   - an upgrade while an upload is in flight stops the agent with SIGTERM and starts it again,
#     and the upload resumes;
#   - `systemctl stop` ends with exit 0;
#   - `dpkg --remove` keeps config and queue, `--purge` removes them, locks the user and leaves
#     the watched folder and done/ alone.
# The container is stopped and removed even when a check fails.
#
# Usage: nspawn.sh HOTFOLDER.deb UPGRADE.deb   (the second: the same package, a later version)
# Needs root, systemd-nspawn (Debian systemd-container), debootstrap, nsenter, and the Debian
# mirror apt uses (the first run downloads about 40 MB; later runs reuse the cached root).
# Exits 0 with a line saying why when it cannot run here; 1 when a check fails.
set -euo pipefail

deb=${1:?usage: nspawn.sh HOTFOLDER.deb UPGRADE.deb}
upgrade_deb=${2:?usage: nspawn.sh HOTFOLDER.deb UPGRADE.deb}
cache=${HOTFOLDER_CI_CACHE:-/var/cache/hotfolder-ci}
suite=bookworm

started=$(date +%s.%N)
say() { printf 'nspawn: [%6.1fs] %s\n' "$(awk "BEGIN { print $(date +%s.%N) - $started }")" "$*"; }
skip() {
  echo "nspawn: skipped: $*"
  exit 0
}
fail() {
  echo "nspawn: FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || skip "needs root (systemd-nspawn, debootstrap)"
for tool in systemd-nspawn debootstrap nsenter pgrep; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed"
done

# The root gets systemd and exactly what the package says it depends on, no more: dpkg -i then
# works without network, and a dependency the package forgot to name fails here (that is how
# ca-certificates and procps, for /bin/kill in ExecReload=, were found).
depends=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/(.*)//; s/|.*//; s/[[:space:]]//g' |
  grep -v '^$' | paste -sd, -)
include=systemd,systemd-sysv,$depends

# The mirror apt uses on this machine, so that debootstrap goes where apt goes.
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\/\{0,1\}\)$/\1/p' \
  /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
if [ -z "$mirror" ]; then
  mirror=$(sed -n 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\/debian\/\{0,1\}\)[[:space:]].*/\2/p' \
    /etc/apt/sources.list 2>/dev/null | head -n 1)
fi
mirror=${mirror:-http://deb.debian.org/debian}

# The cached root: made once, then copied for each run, so that every run starts clean.
base=$cache/$suite-root
if [ ! -f "$base/.hotfolder-ci" ] || [ "$(cat "$base/.hotfolder-ci")" != "$include" ]; then
  say "making a $suite root with debootstrap from $mirror (cached in $base)"
  rm -rf "$base" "$base.new"
  mkdir -p "$cache"
  if ! debootstrap --variant=minbase --include="$include" "$suite" "$base.new" "$mirror" \
    >"$cache/debootstrap.log" 2>&1; then
    tail -n 20 "$cache/debootstrap.log" >&2
    rm -rf "$base.new"
    skip "debootstrap failed (no mirror reachable?); its log: $cache/debootstrap.log"
  fi
  # No getty on a console nobody reads, and no network setup to wait for.
  rm -f "$base.new/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true
  echo "$include" >"$base.new/.hotfolder-ci"
  mv "$base.new" "$base"
  say "root made"
fi

# Runs that were killed outright (no trap) leave their copy behind.
find "$cache" -maxdepth 1 -name 'run.*' -mmin +120 -exec rm -rf {} + 2>/dev/null || true
work=$(mktemp -d "$cache/run.XXXXXX")
root=$work/root
nspawn_pid=
cleanup() {
  local status=$?
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    # SIGTERM asks nspawn to shut the container down cleanly; then no more waiting.
    kill "$nspawn_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$nspawn_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  if [ "$status" != 0 ] && [ -f "$work/console.log" ]; then
    echo "nspawn: the container's console, last lines:" >&2
    tail -n 30 "$work/console.log" >&2
  fi
  rm -rf "$work"
  say "container stopped and removed"
}
trap cleanup EXIT

say "copying the root"
cp -a "$base" "$root"
mkdir -p "$root/mnt/debs"
cp "$deb" "$root/mnt/debs/hotfolder.deb"
cp "$upgrade_deb" "$root/mnt/debs/hotfolder-upgrade.deb"

# The container cannot boot on this machine (no privileges for namespaces, a kernel without
# them): the environment, not the package, so the test says why and skips.
cannot_boot() {
  echo "nspawn: the container's console:"
  tail -n 15 "$work/console.log" 2>/dev/null || true
  skip "$1"
}

say "booting"
systemd-nspawn --quiet --boot --register=no --keep-unit --private-network \
  --directory="$root" --machine=hotfolder-ci >"$work/console.log" 2>&1 </dev/null &
nspawn_pid=$!

# The container's PID 1: nspawn's child once it is systemd.
pid1=
for _ in $(seq 100); do
  for child in $(pgrep -P "$nspawn_pid" 2>/dev/null || true); do
    if [ "$(cat "/proc/$child/comm" 2>/dev/null)" = systemd ]; then
      pid1=$child
    fi
  done
  [ -n "$pid1" ] && break
  kill -0 "$nspawn_pid" 2>/dev/null || cannot_boot "systemd-nspawn exited at once"
  sleep 0.1
done
[ -n "$pid1" ] || cannot_boot "no systemd in the container after 10 s"

# A command inside the container, with a clean environment.
inside() {
  nsenter --target "$pid1" --all \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}
# A shell command inside the container.
sh_inside() { inside /bin/bash -c "$1"; }
# Waits up to $1 seconds for the shell command $2 (inside) to succeed.
wait_for() {
  local seconds=$1 check=$2 what=$3
  local deadline=$(($(date +%s) + seconds))
  until sh_inside "$check" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within ${seconds}s"
    sleep 0.2
  done
}
unit_property() { inside systemctl show --property="$1" --value hotfolder.service; }

# systemctl answers once PID 1 has opened its socket; then it waits for the boot to end.
state=
for _ in $(seq 100); do
  state=$(inside timeout 60 systemctl is-system-running --wait 2>/dev/null || true)
  [ -n "$state" ] && break
  sleep 0.1
done
case $state in
  running | degraded) say "booted: $state" ;;
  *) cannot_boot "the container did not finish booting (state: ${state:-none})" ;;
esac

# --- the package -------------------------------------------------------------------------------
say "installing the package"
inside dpkg -i /mnt/debs/hotfolder.deb >"$work/dpkg.log" 2>&1 || {
  cat "$work/dpkg.log" >&2
  fail "dpkg -i"
}
# The account exists already on an upgrade or reinstall: usermod's "no changes" is expected.
if grep -q 'usermod' "$work/dpkg.log"; then
  fail "installing printed: $(grep usermod "$work/dpkg.log")"
fi
version=$(inside hotfolder --version)
say "installed: $version"
[ "$(inside systemctl is-enabled hotfolder.service || true)" = disabled ] ||
  fail "the unit is not installed disabled"
[ "$(inside systemctl is-active hotfolder.service || true)" = inactive ] ||
  fail "installing started the agent"
verify=$(inside systemd-analyze verify hotfolder.service 2>&1 || true)
[ -z "$verify" ] || fail "systemd-analyze verify hotfolder.service: $verify"
[ "$(inside stat -c '%a %U %G' /etc/hotfolder/config.toml)" = "640 root hotfolder" ] ||
  fail "/etc/hotfolder/config.toml is $(inside stat -c '%a %U %G' /etc/hotfolder/config.toml)"
for file in /usr/share/bash-completion/completions/hotfolder /usr/share/man/man1/hotfolder.1.gz \
  /usr/share/zsh/vendor-completions/_hotfolder /usr/share/fish/vendor_completions.d/hotfolder.fish \
  /usr/lib/systemd/user/hotfolder.service; do
  inside test -s "$file" || fail "$file is missing"
done
say "unit installed disabled and stopped; verify clean; config 0640 root:hotfolder"

# --- the emulator and the config ---------------------------------------------------------------
inside systemd-run --quiet --unit=emulator --property=Type=exec \
  hotfolder emulator --listen 127.0.0.1:18080 --username ci --password ci-password
wait_for 20 'exec 3<>/dev/tcp/127.0.0.1/18080' "the emulator listening"
# The emulator's own answer says where its API and login are (its start-up banner).
api_url=$(inside journalctl -u emulator -o cat | sed -n 's/^api_url = "\(.*\)"$/\1/p' | head -n 1)
token_url=$(inside journalctl -u emulator -o cat | sed -n 's/^token_url = "\(.*\)"$/\1/p' | head -n 1)
if [ -z "$api_url" ] || [ -z "$token_url" ]; then
  fail "the emulator's banner names no URLs"
fi

write_config() {
  # $1: extra TOML appended (more folders, or a mistake).
  cat >"$root/etc/hotfolder/config.toml.new" <<EOF
[account]
api_url = "$api_url"
token_url = "$token_url"
username = "ci"
password_file = "/run/credentials/hotfolder.service/password"
video_manager_id = 12345

[upload]
chunk_size = "1 MiB"
# Slow enough that an upload is still in flight when the agent is frozen or upgraded.
bandwidth_limit = "2 MiB/s"

[state]
dir = "/var/lib/hotfolder"

[[folder]]
path = "/srv/exports"
stable_for = "1s"
check_container = false
$1
EOF
  sh_inside 'cat /etc/hotfolder/config.toml.new > /etc/hotfolder/config.toml && rm /etc/hotfolder/config.toml.new'
}
write_config ""
sh_inside 'install -m 0600 /dev/null /etc/hotfolder/password && echo ci-password > /etc/hotfolder/password'
sh_inside 'mkdir -p /srv/exports /srv/more && chgrp hotfolder /srv/exports /srv/more && chmod 2775 /srv/exports /srv/more'
# The drop-in an admin writes (systemctl edit): the second folder made writable; and, for the
# test only, a watchdog and restart that take seconds instead of a minute.
mkdir -p "$root/etc/systemd/system/hotfolder.service.d"
cat >"$root/etc/systemd/system/hotfolder.service.d/ci.conf" <<'EOF'
[Service]
ReadWritePaths=/srv/more
WatchdogSec=4
TimeoutAbortSec=3
RestartSec=1
EOF
inside systemctl daemon-reload

# --- start: active only after READY ------------------------------------------------------------
say "starting the service"
inside systemctl enable --quiet hotfolder.service
inside timeout 60 systemctl start hotfolder.service || {
  inside journalctl -u hotfolder --no-pager -n 30 >&2
  fail "systemctl start hotfolder"
}
[ "$(inside systemctl is-active hotfolder.service)" = active ] || fail "not active after start"
exec_at=$(unit_property ExecMainStartTimestampMonotonic)
active_at=$(unit_property ActiveEnterTimestampMonotonic)
# The agent logs "ready" the moment before it sends READY=1, with the time on systemd's clock
# (src/agent/mod.rs). The journal's own timestamp would not do: journald stamps a line when it
# reads it, which may be after systemd has already handled the READY=1 sent behind it.
ready_at=$(inside journalctl -u hotfolder -o json --output-fields=MONOTONIC_US |
  sed -n 's/.*"MONOTONIC_US":"\([0-9]*\)".*/\1/p' | head -n 1)
[ -n "$ready_at" ] || fail "no 'ready:' line with MONOTONIC_US from the agent in the journal"
if ! [ "$exec_at" -lt "$ready_at" ] || ! [ "$ready_at" -le "$active_at" ]; then
  fail "order: started $exec_at, agent ready $ready_at, unit active $active_at (monotonic µs)"
fi
say "active only after READY: started at +0, ready at +$(((ready_at - exec_at) / 1000)) ms, active at +$(((active_at - exec_at) / 1000)) ms"

# --- a file reaches the emulator and done/ -----------------------------------------------------
emulator_videos() {
  sh_inside 'exec 3<>/dev/tcp/127.0.0.1/18080 && printf "GET /_emulator/videos HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3 && cat <&3'
}
# Exactly one video on the emulator for the file $1, complete, and never started over: an
# interrupted upload resumed on the same video (the emulator's list is compact JSON).
one_whole_video() {
  local found count
  found=$(emulator_videos | tr '}' '\n' | grep "\"file_name\":\"$1\"" || true)
  count=$(printf '%s' "$found" | grep -c . || true)
  [ "$count" = 1 ] || fail "$1: $count videos on the emulator, not one"
  printf '%s' "$found" | grep -q '"complete":true' || fail "$1: its video is not complete"
  printf '%s' "$found" | grep -q '"restarts":0' || fail "$1: its upload started over instead of resuming"
}
drop() {
  # $1 folder, $2 name, $3 size in MiB: written under a hidden name, then renamed into place.
  sh_inside "head -c $(($3 * 1024 * 1024)) /dev/urandom > '$1/.$2.part' && mv '$1/.$2.part' '$1/$2'"
}
uploaded() {
  # $1 the file's done/ path: waits for it and its sidecar, prints the video id.
  wait_for "$2" "grep -q '\"status\": *\"uploaded\"' '$1.upload.json'" "$1 in done/ with its sidecar"
  inside sed -n 's/.*"video_id": *"\([^"]*\)".*/\1/p' "$1.upload.json" | head -n 1
}
drop /srv/exports clip.mov 1
video_id=$(uploaded /srv/exports/done/clip.mov 60)
[ -n "$video_id" ] || fail "the sidecar names no video id"
emulator_videos | grep -q "\"id\":\"$video_id\"" || fail "the emulator has no video $video_id"
one_whole_video clip.mov
say "clip.mov uploaded as $video_id and moved to done/"

# --- the journal -------------------------------------------------------------------------------
fields=$(inside journalctl -u hotfolder -o json FILE=clip.mov --output-fields=FILE,VIDEO_ID,PRIORITY,MESSAGE)
echo "$fields" | grep -q "\"VIDEO_ID\":\"$video_id\"" || fail "no journal entry with FILE=clip.mov and VIDEO_ID=$video_id"
# The line itself names the file too, as `journalctl -u hotfolder` shows it.
inside journalctl -u hotfolder -o cat FILE=clip.mov | grep -q 'file=clip.mov' ||
  fail "the journal's lines do not name the file"
if inside journalctl -u hotfolder -o cat SYSLOG_IDENTIFIER=hotfolder | grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T'; then
  fail "log lines carry a timestamp of their own"
fi
for dir in /var/log/hotfolder /var/lib/hotfolder/logs /var/lib/hotfolder/.local; do
  inside test ! -e "$dir" || fail "$dir exists: the log was copied into files"
done
write_config $'\n[upload]\nbogus = 1\n'
inside systemctl reload hotfolder.service
wait_for 20 "journalctl -u hotfolder -p err -o cat | grep -q 'config reload refused'" \
  "journalctl -p err showing the refused reload"
[ "$(inside systemctl is-active hotfolder.service)" = active ] || fail "a refused reload stopped the agent"
say "journal: FILE and VIDEO_ID fields, no second timestamp, no files; -p err finds the refused reload"

# --- reload adds a folder ----------------------------------------------------------------------
write_config $'\n[[folder]]\npath = "/srv/more"\nstable_for = "1s"\ncheck_container = false\n'
inside systemctl reload hotfolder.service
wait_for 20 "journalctl -u hotfolder -o cat FOLDER=/srv/more | grep -q watching" "the reload watching /srv/more"
drop /srv/more added.mov 1
uploaded /srv/more/done/added.mov 60 >/dev/null
say "reload added /srv/more; a file there was uploaded"

# --- the watchdog: a frozen agent is killed, restarted, and resumes ----------------------------
# Waits until the agent has sent a few chunks of $1 (1 MiB each, at 2 MiB/s).
uploading() {
  wait_for 60 "journalctl -u hotfolder -o cat FILE=$1 | grep -q '^uploading'" "$1's upload starting"
  sleep 3
}
drop /srv/exports frozen.mov 16
uploading frozen.mov
pid=$(unit_property MainPID)
restarts=$(unit_property NRestarts)
inside kill -STOP "$pid"
say "agent $pid frozen with SIGSTOP during frozen.mov's upload"
wait_for 30 "[ \"\$(systemctl show -p MainPID --value hotfolder)\" != $pid ] && [ \"\$(systemctl show -p MainPID --value hotfolder)\" != 0 ]" "a new agent after the watchdog"
[ "$(unit_property NRestarts)" -gt "$restarts" ] || fail "systemd did not count a restart"
inside journalctl -u hotfolder -o cat | grep -qi 'watchdog timeout' || fail "no watchdog timeout in the journal"
wait_for 60 "systemctl is-active -q hotfolder" "the restarted agent active"
frozen_id=$(uploaded /srv/exports/done/frozen.mov 90)
inside journalctl -u hotfolder -o cat FILE=frozen.mov | grep -Eq 'resuming at chunk ([2-9]|[1-9][0-9])' ||
  fail "frozen.mov was not resumed after the restart"
emulator_videos | grep -q "\"id\":\"$frozen_id\"" || fail "the emulator has no video $frozen_id"
one_whole_video frozen.mov
say "watchdog killed the frozen agent; systemd restarted it; frozen.mov resumed and finished"

# --- an upgrade during an upload ---------------------------------------------------------------
drop /srv/exports upgrade.mov 16
uploading upgrade.mov
pid=$(unit_property MainPID)
inside dpkg -i /mnt/debs/hotfolder-upgrade.deb >"$work/dpkg.log" 2>&1 || {
  cat "$work/dpkg.log" >&2
  fail "dpkg -i (upgrade)"
}
if grep -q 'usermod' "$work/dpkg.log"; then
  fail "the upgrade printed: $(grep usermod "$work/dpkg.log")"
fi
[ "$(unit_property MainPID)" != "$pid" ] || fail "the upgrade did not restart the agent"
inside journalctl -u hotfolder -o cat FILE=upgrade.mov | grep -q 'interrupted by shutdown' ||
  fail "the upgrade did not stop the agent with SIGTERM (no clean interruption logged)"
uploaded /srv/exports/done/upgrade.mov 90 >/dev/null
inside journalctl -u hotfolder -o cat FILE=upgrade.mov | grep -Eq 'resuming at chunk ([2-9]|[1-9][0-9])' ||
  fail "upgrade.mov was not resumed after the upgrade"
one_whole_video upgrade.mov
say "upgraded to $(inside dpkg-query -W -f "\${Version}" hotfolder) during an upload: SIGTERM, restart, resumed"

# --- stop --------------------------------------------------------------------------------------
inside systemctl stop hotfolder.service
[ "$(unit_property Result)" = success ] || fail "stop: Result=$(unit_property Result)"
[ "$(unit_property ExecMainStatus)" = 0 ] || fail "stop: exit status $(unit_property ExecMainStatus)"
say "systemctl stop: exit 0"

# --- remove and purge --------------------------------------------------------------------------
inside dpkg --remove hotfolder >"$work/dpkg.log" 2>&1 || fail "dpkg --remove: $(cat "$work/dpkg.log")"
inside test ! -e /usr/bin/hotfolder || fail "/usr/bin/hotfolder is left after remove"
for kept in /etc/hotfolder/config.toml /etc/hotfolder/password /var/lib/hotfolder/jobs.sqlite3; do
  inside test -e "$kept" || fail "dpkg --remove took $kept"
done
# Purge deletes hotfolder's exact names only: a daily file goes, files an admin put beside
# it (named much like it) stay, and so does their directory.
sh_inside 'mkdir -p /var/log/hotfolder && : >/var/log/hotfolder/hotfolder.2026-01-31.log &&
  echo mine >/var/log/hotfolder/hotfolder.catalog.txt && echo mine >/var/log/hotfolder/mine.lock'
inside dpkg --purge hotfolder >"$work/dpkg.log" 2>&1 || fail "dpkg --purge: $(cat "$work/dpkg.log")"
inside test ! -e /var/log/hotfolder/hotfolder.2026-01-31.log || fail "the purge left a daily log file"
for kept in /var/log/hotfolder/hotfolder.catalog.txt /var/log/hotfolder/mine.lock; do
  inside test -e "$kept" || fail "the purge deleted the admin's $kept"
done
grep -q 'kept /var/log/hotfolder' "$work/dpkg.log" || fail "the purge did not say why it kept /var/log/hotfolder"
sh_inside 'rm -r /var/log/hotfolder'
for gone in /etc/hotfolder /var/lib/hotfolder /usr/lib/systemd/system/hotfolder.service \
  /lib/systemd/system/hotfolder.service /etc/systemd/system/multi-user.target.wants/hotfolder.service; do
  inside test ! -e "$gone" || fail "$gone is left after the purge"
done
[ "$(inside getent shadow hotfolder | cut -d: -f8)" = 1 ] || fail "the purge did not lock the user"
for kept in /srv/exports/done/clip.mov /srv/exports/done/frozen.mov /srv/more/done/added.mov; do
  inside test -e "$kept" || fail "the purge touched $kept"
done
say "remove kept config and queue; purge removed them and no admin's file, locked the user, left the folders alone"
say "all checks passed"
