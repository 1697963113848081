#!/usr/bin/env bash
# Builds the Debian package: the binary (release profile unless HOTFOLDER_DEB_PROFILE says), its completions and man page (made by the
# binary itself), then `cargo deb --no-build` (metadata in Cargo.toml, [package.metadata.deb]).
# Prints the path of the .deb last. Needs cargo-deb: cargo install cargo-deb --locked.
# Extra arguments go to cargo deb (e.g. --deb-version 0.1.0-2 for a second build to upgrade to).
set -euo pipefail
cd "$(dirname "$0")/../.."

# A SOURCE_DATE_EPOCH from the caller (a reproducible build) is the build date `--version`
# shows and the files' times in the package. Without one, the binary shows the day it was built
# and the package's files get the last commit's time. Not set for the build here: the C parts
# (ring, SQLite) are rebuilt whenever it changes, which would be at every commit.
# HOTFOLDER_DEB_PROFILE=dev with HOTFOLDER_DEB_NO_BUILD=1 packages the binary `cargo test` has
# just built and tested as it is (CI does: `cargo build` would build several dependencies again,
# their features unified without the dev-dependencies'); packages for people use the release
# profile and build it here.
profile=${HOTFOLDER_DEB_PROFILE:-release}
case $profile in
  dev) profile_dir=debug ;;
  *) profile_dir=$profile ;;
esac
if [ "${HOTFOLDER_DEB_NO_BUILD:-}" != 1 ]; then
  cargo build --profile "$profile" --locked >&2
fi
target_dir=$(cargo metadata --no-deps --format-version 1 |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
binary=$target_dir/$profile_dir/hotfolder
if [ ! -x "$binary" ]; then
  echo "build.sh: $binary is not there; build it first (or leave HOTFOLDER_DEB_NO_BUILD unset)" >&2
  exit 1
fi
assets=$target_dir/$profile_dir/package-assets
mkdir -p "$assets"
"$binary" completions bash >"$assets/hotfolder.bash"
"$binary" completions zsh >"$assets/_hotfolder"
"$binary" completions fish >"$assets/hotfolder.fish"
# -n: no name or time in the gzip header, so the same page gives the same bytes.
"$binary" manpage | gzip -9n >"$assets/hotfolder.1.gz"

SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)} \
  cargo deb --no-build --locked --profile "$profile" "$@" | tail -n 1
