#!/bin/sh
# aarsm: prerm (deb) / %preun (rpm).
#
# Arguments:
#   deb  remove                  real removal (also before a purge)
#        upgrade NEW-VERSION     the new version's postinst restarts it
#        deconfigure|failed-upgrade ...
#   rpm  0                       real removal
#        1 (or more)             upgrade: nothing to do here
set -e

UNIT=aarsm.service
REMOVED_MARKER=/var/lib/aarsm/.package-removed

have() { command -v "$1" >/dev/null 2>&1; }
systemd_running() { [ -d /run/systemd/system ]; }
warn() { echo "aarsm: $*" >&2; }

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

if systemd_running; then
	# Stopping resumes or releases what the agent holds; its pinned maps
	# are removed after the files (postremove).
	systemctl stop "$UNIT" || warn "systemctl stop $UNIT failed"
fi
if have systemctl; then
	systemctl disable "$UNIT" || warn "systemctl disable $UNIT failed"
fi
if [ "$1" = remove ]; then
	# dpkg keeps the configuration and calls postinst "configure
	# OLD-VERSION" on a later install: this tells it to enable again.
	if ! { mkdir -p /var/lib/aarsm && : >"$REMOVED_MARKER"; }; then
		warn "could not write $REMOVED_MARKER"
	fi
fi
exit 0
