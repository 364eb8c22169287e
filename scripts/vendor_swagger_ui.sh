#!/bin/sh
# Refresh the vendored Swagger UI (web/docs/vendor/) from the npm registry: the files the API
# reference page at /docs needs, committed so that a fresh clone needs no npm and no CDN.
#   sh scripts/vendor_swagger_ui.sh [VERSION]
set -eu
version=${1:-5.35.0}
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "swagger-ui-dist@$version" >/dev/null && tar xzf "swagger-ui-dist-$version.tgz")
for f in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt; do
    cp "$tmp/package/$f" "$here/web/docs/vendor/$f"
done
sed -i '/sourceMappingURL=/d' "$here/web/docs/vendor/swagger-ui-bundle.js" "$here/web/docs/vendor/swagger-ui.css"  # the maps are not vendored
echo "swagger-ui-dist $version in web/docs/vendor"
