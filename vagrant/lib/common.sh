# shellcheck shell=bash
# Shared helpers for the AARSM VM scripts. Source it; it does not run anything.

# The directory of the vagrant/ scripts and the repository root.
AARSM_VAGRANT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AARSM_REPO_DIR=$(cd "$AARSM_VAGRANT_DIR/.." && pwd)

# Images, boxes, the SSH key and run directories live here.
AARSM_VM_CACHE=${AARSM_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aarsm-vm}

# Every row of the local kernel matrix. "host" is the running kernel, tested
# without a VM.
AARSM_ALL_ROWS="bullseye bookworm bookworm-6.12 trixie host"

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${LOG_TAG:-vm}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || die "$c not found; install the packages listed in vagrant/README.md"
	done
}

# row_def ROW: sets SUITE, KERNEL_PKG, SECURITY (also use SUITE-security:
# yes/no) and ROW_DESC for a Debian row of the matrix. Bullseye (LTS) is
# built from its main suite only: its security archive on the mirror lists
# packages it no longer serves (404).
row_def() {
	case $1 in
	bullseye) SUITE=bullseye KERNEL_PKG=linux-image-amd64 SECURITY=no ROW_DESC="Debian 11, 5.10" ;;
	bookworm) SUITE=bookworm KERNEL_PKG=linux-image-amd64 SECURITY=yes ROW_DESC="Debian 12, 6.1" ;;
	bookworm-6.12) SUITE=bookworm KERNEL_PKG=linux-image-6.12-amd64 SECURITY=yes ROW_DESC="Debian 12, 6.12 (bookworm-security)" ;;
	trixie) SUITE=trixie KERNEL_PKG=linux-image-amd64 SECURITY=yes ROW_DESC="Debian 13, 6.12" ;;
	*) die "unknown row '$1' (known: $AARSM_ALL_ROWS)" ;;
	esac
}

# apt_uri KIND: the first archive URI this machine's apt uses, from
# /etc/apt/sources.list and sources.list.d (one-line and deb822 formats).
# KIND is "debian" (the main archive) or "debian-security".
apt_uri() {
	local kind=$1 f uri
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		uri=$(sed -n -e 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
			-e 's/^[[:space:]]*URIs:[[:space:]]*//p' "$f" | tr ' ' '\n' |
			grep -E "^[a-z+]+://[^[:space:]]*/${kind}/?$" | head -n1) || true
		if [ -n "$uri" ]; then
			echo "${uri%/}"
			return 0
		fi
	done
	return 1
}

# mirrors: sets MIRROR and SECURITY_MIRROR (AARSM_VM_MIRROR and
# AARSM_VM_SECURITY_MIRROR override what apt uses here).
mirrors() {
	MIRROR=${AARSM_VM_MIRROR:-$(apt_uri debian || true)}
	[ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list*; set AARSM_VM_MIRROR"
	SECURITY_MIRROR=${AARSM_VM_SECURITY_MIRROR:-$(apt_uri debian-security || true)}
	[ -n "$SECURITY_MIRROR" ] || SECURITY_MIRROR=${MIRROR%/debian}/debian-security
}

# ssh_key: creates (once) and prints the path of the key the images trust.
ssh_key() {
	local k=$AARSM_VM_CACHE/ssh/id_ed25519
	if [ ! -f "$k" ]; then
		mkdir -p "$(dirname "$k")"
		chmod 700 "$(dirname "$k")"
		ssh-keygen -q -t ed25519 -N '' -C aarsm-vm-test -f "$k"
	fi
	echo "$k"
}

SSH_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
	-o ConnectTimeout=5 -o BatchMode=yes -o IdentitiesOnly=yes)

# free_port: an unused TCP port on 127.0.0.1.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
