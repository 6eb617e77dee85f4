#!/usr/bin/env bash
# Adds the public symbols a build reports as undeclared (RS0016) to each project's PublicAPI.Unshipped.txt.
# Run after a deliberate change to the public API, then review the diff: scripts/declare-public-api.sh [project.csproj]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-Gear.AI.sln}"
dotnet build "$target" -c Release 2>&1 | grep "error RS0016" | sort -u |
  sed -E "s#^(.*/src/[^/]+)/.*Symbol '(.*)' is not part of the declared public API.*#\1\t\2#" |
  while IFS=$'\t' read -r dir symbol; do echo "$symbol" >> "$dir/PublicAPI.Unshipped.txt"; done || true
for f in src/*/PublicAPI.Unshipped.txt; do
  { echo '#nullable enable'; grep -v '^#nullable' "$f" | sort -u || true; } > "$f.tmp" && mv "$f.tmp" "$f"
done
git diff --stat -- 'src/*/PublicAPI.Unshipped.txt'
