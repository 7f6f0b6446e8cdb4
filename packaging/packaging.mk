# Packaging targets for aarsm: a .deb and an .rpm built by nfpm from nfpm.yaml.
#
# Included from the top Makefile (include packaging/packaging.mk), or alone:
#   make -f packaging/packaging.mk packages
#
# Targets:
#   packages          dist/aarsm_VERSION-1_ARCH.deb and dist/aarsm-VERSION-1.ARCH.rpm
#   package-deb       the .deb only
#   package-rpm       the .rpm only
#   packages-binary   the static binary that goes into the packages
#   packages-test     go test ./packaging/... (root; see systemd/README.md)
#   packages-clean    remove what these targets built
#
# Variables (override on the command line):
#   PKG_VERSION       from the last v* tag (v1.2.3 -> 1.2.3; 4 commits after it ->
#                     1.2.3+git4.gSHA), else 0.0.0+gitYYYYMMDDhhmmss of the last commit
#   PKG_ARCH          Go architecture name (amd64, arm64); default: go env GOARCH
#   PKG_DIST          output directory (dist)
#   PKG_MAINTAINER    the packages' Maintainer/Packager
#   PKG_BINARY        a binary to package as it is, instead of building one
#   SOURCE_DATE_EPOCH every timestamp in the packages; default: the last commit's
#   NFPM              the nfpm command; default: nfpm v2.45.2 from the module proxy

# All variables are PKG_-prefixed so they do not collide with the top Makefile.
PKG_GO            ?= $(or $(GO),go)
NFPM              ?= $(PKG_GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
PKG_DIST          ?= dist
PKG_ARCH          ?= $(shell $(PKG_GO) env GOARCH)
PKG_MAINTAINER    ?= AARSM developers <aarsm@users.noreply.github.com>
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 1767225600)
PKG_VERSION       ?= $(shell \
	v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null) && \
	  echo "$$v" | sed -e 's/^v//' -e 's/-\([0-9]*\)-\(g[0-9a-f]*\)$$/+git\1.\2/' || \
	  echo "0.0.0+git$$(date -u -d @$(SOURCE_DATE_EPOCH) +%Y%m%d%H%M%S)")

PKG_BUILT_BINARY := $(PKG_DIST)/build/aarsm
PKG_BINARY       ?= $(PKG_BUILT_BINARY)
ifeq ($(PKG_BINARY),$(PKG_BUILT_BINARY))
pkg_binary_dep := packages-binary
endif

# What nfpm.yaml reads.
pkg_env = SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
	AARSM_VERSION='$(PKG_VERSION)' AARSM_ARCH='$(PKG_ARCH)' \
	AARSM_BINARY='$(PKG_BINARY)' AARSM_MAINTAINER='$(PKG_MAINTAINER)'

.PHONY: packages package-deb package-rpm packages-binary packages-test packages-clean

packages: package-deb package-rpm

package-deb package-rpm: package-%: $(pkg_binary_dep)
	@mkdir -p $(PKG_DIST)
	$(pkg_env) $(NFPM) package --config nfpm.yaml --packager $* --target $(PKG_DIST)/

# Static (no libc dependency), without build paths, VCS stamps or build ids
# that vary: two builds of one commit are byte for byte the same.
packages-binary:
	@mkdir -p $(dir $(PKG_BUILT_BINARY))
	CGO_ENABLED=0 GOARCH=$(PKG_ARCH) $(PKG_GO) build -trimpath -buildvcs=false \
		-ldflags '-s -w -buildid= -X main.version=$(PKG_VERSION)' \
		-o $(PKG_BUILT_BINARY) ./agent/cmd/aarsm

packages-test:
	$(PKG_GO) test ./packaging/... -count=1

packages-clean:
	rm -rf $(PKG_DIST)/build $(PKG_DIST)/aarsm_*.deb $(PKG_DIST)/aarsm-*.rpm
