#!/usr/bin/env bash
# Builds the Debian package of jobdaemon from this checkout, in one command:
#
#   bash packaging/build-deb.sh      # → dist-out/jobdaemon_VERSION_ARCH.deb
#   bash packaging/build-deb.sh --print-version    # only say which VERSION
#
# It prints the path of the package on its last line. Environment:
#   VERSION      the package version; default: from git (see deb_version)
#   GOARCH       amd64 (default: the Go toolchain's) or arm64
#   OUT_DIR      where the .deb goes; default: dist-out (ignored by git)
#   MAINTAINER   the Maintainer field; default: see below
#
# Tools: Go 1.26 (/usr/local/go/bin is added to PATH) and nfpm, which
# "go run" fetches from the module proxy at the pinned version without
# touching go.mod; gzip. Nothing needs root. docs/INSTALL.md says why
# nfpm and not debhelper.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/usr/local/go/bin:$PATH"

NFPM_VERSION=v2.45.2
MAINTAINER=${MAINTAINER:-jobdaemon maintainers <maintainers@jobdaemon.invalid>}
OUT_DIR=${OUT_DIR:-dist-out}

die() {
	echo "build-deb: $*" >&2
	exit 1
}

# deb_version prints the package version, one Debian's dpkg orders the way
# the history goes:
#   on the tag v1.2.0                  1.2.0        (v1.3.0-rc1: 1.3.0~rc1)
#   5 commits after it                 1.2.0+5.gabc1234
#   no tag at all                      0.0~git20261201.031230.abc1234 (commit time, UTC)
# with "+dirty" when tracked files differ from the commit. A native
# version (no "-revision"): the packaging lives in the project itself.
deb_version() {
	if [[ -n ${VERSION:-} ]]; then
		echo "$VERSION"
		return
	fi
	git rev-parse --git-dir >/dev/null 2>&1 ||
		die "not a git checkout: set VERSION (e.g. VERSION=1.2.0)"
	local desc tag n sha v
	sha=$(git rev-parse --short=7 HEAD)
	if desc=$(git describe --tags --long --abbrev=7 --match 'v[0-9]*' 2>/dev/null); then
		# v1.2.0-5-gabc1234: the tag may hold dashes itself (v1.3.0-rc1).
		n=${desc%-g*}
		n=${n##*-}
		tag=${desc%-"$n"-g*}
		tag=${tag#v}
		tag=${tag//-/\~}
		if [[ $n == 0 ]]; then
			v=$tag
		else
			v="$tag+$n.g$sha"
		fi
	else
		v="0.0~git$(TZ=UTC0 git log -1 --date=format-local:%Y%m%d.%H%M%S --format=%cd HEAD).$sha"
	fi
	if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
		v+="+dirty"
	fi
	echo "$v"
}

version=$(deb_version)
[[ $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "not a Debian version: $version"
case ${1:-} in
"") ;;
--print-version)
	echo "$version"
	exit 0
	;;
*)
	echo "usage: bash packaging/build-deb.sh [--print-version]" >&2
	exit 2
	;;
esac

goarch=${GOARCH:-$(go env GOARCH)}
case $goarch in
amd64 | arm64) arch=$goarch ;; # the same names in Debian
*) die "GOARCH=$goarch: only amd64 and arm64 are mapped to Debian architectures" ;;
esac

# Reproducible: every time stamp (man pages, files, changelog) is the
# commit's, unless the caller set one.
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct HEAD 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/stage
mkdir -p "$stage/man" "$OUT_DIR"

# CGO_ENABLED=0: no shared library, so the same binary runs on every
# Debian release and there is no libc version to declare (nfpm does not
# run dpkg-shlibdeps). Users and groups are then looked up in /etc/passwd
# and /etc/group only, not through NSS (LDAP, sssd): the package's user
# is a local system user. -buildmode=pie: loaded at a random address, as
# Debian builds its programs (the daemon starts as root under classic
# init); it needs only the dynamic loader, and Go links it itself.
# -s -w: Debian ships stripped binaries (lintian: unstripped-binary-or-object);
# Go's own tables still name the functions in a panic's stack trace.
echo "== go build $version ($goarch)" >&2
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath -buildmode=pie \
	-ldflags "-s -w -X main.version=$version" -o "$stage/jobdaemon" ./cmd/jobdaemon

# The man pages and the completion come from the binary's own command
# definitions, built for this machine with the man page generator, which
# the shipped binary leaves out (it slows every start: pkg/service/docs.go).
# They show --config's default, which the caller's environment must not
# change.
unset JOBDAEMON_CONFIG
gen=$work/jobdaemon-gen
CGO_ENABLED=0 GOARCH='' go build -trimpath -tags jobdaemon_genman -ldflags "-X main.version=$version" -o "$gen" ./cmd/jobdaemon
"$gen" gen-man "$stage/man"
gzip -9n "$stage/man"/*.8
"$gen" completion bash >"$stage/jobdaemon.bash-completion"

# Debian's changelog of a native package: one entry, this build's.
{
	printf 'jobdaemon (%s) unstable; urgency=medium\n\n' "$version"
	if commit=$(git rev-parse HEAD 2>/dev/null); then
		printf '  * Built from commit %s.\n' "$commit"
	else
		printf '  * Built from a source tree without git.\n'
	fi
	printf '  * The changes are in the project'"'"'s git history.\n\n'
	printf ' -- %s  %s\n' "$MAINTAINER" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$stage/changelog.gz"

echo "== nfpm $NFPM_VERSION" >&2
# Only this build's package is left for this architecture, so that
# "apt install ./dist-out/jobdaemon_*_amd64.deb" names one.
deb=$OUT_DIR/jobdaemon_${version}_$arch.deb
rm -f "$OUT_DIR"/jobdaemon_*_"$arch".deb
VERSION=$version ARCH=$arch MAINTAINER=$MAINTAINER STAGE=$stage \
	GOFLAGS='' go run "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" \
	package --config packaging/nfpm.yaml --packager deb --target "$deb" >&2
echo "$deb"
