#!/bin/bash
# Build the Debian package of pgpool-anycast-hook from this checkout, and check it.
#
#   bash packaging/build-deb.sh
#
# On Debian 12: copies the checkout (tracked and untracked files, without build
# leftovers) to a temporary directory, puts packaging/debian/ there as debian/,
# runs `dpkg-buildpackage -us -uc -b`, then lintian on the result. Missing build
# dependencies are installed with apt-get when run as root. Leaves
#   dist/pgpool-anycast-hook_<version>_all.deb   the package
#   dist/lintian.txt                              lintian's full output
#   dist/build.log                                dpkg-buildpackage's output
# Exits non-zero if the build fails or lintian reports an error or a warning.
# PAH_KEEP_BUILD=1 keeps the temporary build directory for inspection.
set -euo pipefail
# Debian's own tools and interpreter only: a python3 from pyenv or a virtualenv
# earlier in PATH would otherwise build the package (pybuild runs `python3.X`).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

here=$(cd "$(dirname "$0")/.." && pwd)
dist=$here/dist
package=pgpool-anycast-hook
started=$(date +%s)

say() { printf 'build-deb: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

[ -f "$here/packaging/debian/changelog" ] || fail "no packaging/debian/changelog under $here"
[ -f "$here/README.md" ] || fail "no README.md: pyproject.toml and packaging/debian/docs need it"

# The package version comes from debian/changelog; it must match pyproject.toml,
# or the .deb would carry one version and the installed metadata another.
deb_version=$(dpkg-parsechangelog -l "$here/packaging/debian/changelog" -S Version)
py_version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$here/pyproject.toml")
[ "$deb_version" = "$py_version" ] ||
    fail "version mismatch: packaging/debian/changelog says $deb_version, pyproject.toml says $py_version"

# lintian is not a build dependency, but this script needs it.
if ! command -v lintian >/dev/null || ! command -v dpkg-buildpackage >/dev/null; then
    [ "$(id -u)" = 0 ] || fail "lintian and dpkg-dev are missing; install them (or run scripts/setup-dev.sh)"
    say "installing lintian and dpkg-dev"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian dpkg-dev >/dev/null
fi

work=$(mktemp -d /tmp/pgpool-anycast-hook-deb.XXXXXX)
cleanup() {
    if [ "${PAH_KEEP_BUILD:-}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
src=$work/$package-$deb_version
mkdir -p "$src"

# Copy what git would see (tracked and untracked, minus ignored), so that an
# uncommitted checkout builds too; drop build and tool leftovers in any case.
leftovers='^(dist|build|debian|\.pybuild|\.venv)/|(^|/)(\.git|__pycache__|[^/]*\.egg-info|\.mypy_cache|\.ruff_cache|\.pytest_cache|\.hypothesis)(/|$)'
cd "$here"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard
else
    find . -type f -printf '%P\0'
fi | grep -zEv "$leftovers" | while IFS= read -r -d '' file; do
    # git ls-files lists deleted tracked files too; copy only what exists.
    [ -e "$file" ] && printf '%s\0' "$file"
done | tar --null --files-from=- -cf - | tar -xf - -C "$src"
cp -a "$here/packaging/debian" "$src/debian"

# Build dependencies, as debian/control lists them.
if ! missing=$(cd "$src" && dpkg-checkbuilddeps 2>&1); then
    [ "$(id -u)" = 0 ] || fail "$missing"
    # "dpkg-checkbuilddeps: error: Unmet build dependencies: a b (>= 1) c | d"
    # becomes "a b c": versions dropped, the first of alternatives kept.
    wanted=$(printf '%s\n' "$missing" | sed -n 's/.*Unmet build dependencies: //p' |
        sed -E 's/\([^)]*\)//g; s/<[^>]*>//g; s/\|[[:space:]]*[^[:space:]]+//g')
    say "installing build dependencies: $wanted"
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $wanted >/dev/null
fi

mkdir -p "$dist"
say "building $package $deb_version in $src"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$dist/build.log" 2>&1; then
    tail -n 40 "$dist/build.log" >&2
    fail "dpkg-buildpackage failed; full log: $dist/build.log"
fi

changes=$work/${package}_${deb_version}_amd64.changes
[ -f "$changes" ] || changes=$(ls "$work"/*.changes)
deb=$work/${package}_${deb_version}_all.deb
[ -f "$deb" ] || fail "dpkg-buildpackage made no $deb"

# Errors and warnings fail the build; info and pedantic tags are shown for review.
# The .changes covers the .deb and the .buildinfo.
lintian_status=0
lintian --fail-on error,warning --display-info --pedantic "$changes" >"$dist/lintian.txt" 2>&1 ||
    lintian_status=$?
cat "$dist/lintian.txt" >&2

rm -f "$dist/${package}"_*_all.deb
cp "$deb" "$dist/"
say "made dist/$(basename "$deb") in $(($(date +%s) - started)) s"
[ "$lintian_status" = 0 ] || fail "lintian reported errors or warnings (exit $lintian_status)"
say "lintian: no errors, no warnings"
