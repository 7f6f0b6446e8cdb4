#!/bin/sh
# aarsm: postinst (deb) / %post (rpm).
#
# Arguments:
#   deb  configure OLD-VERSION   OLD-VERSION is empty on a first install
#        abort-upgrade|abort-remove|abort-deconfigure ...
#   rpm  1                       first install
#        2 (or more)             upgrade: the new files are in place
#
# Works without a running systemd (chroot, image build, container with
# another init): only enabling, the catalog and tmpfiles are done then.
set -e

UNIT=aarsm.service
# Left by preremove on a real removal that kept the configuration (deb
# "remove"), so installing again counts as a first install.
REMOVED_MARKER=/var/lib/aarsm/.package-removed

have() { command -v "$1" >/dev/null 2>&1; }
systemd_running() { [ -d /run/systemd/system ]; }
warn() { echo "aarsm: $*" >&2; }

case "$1" in
configure)
	if [ -z "$2" ] || [ -e "$REMOVED_MARKER" ]; then
		action=install
	else
		action=upgrade
	fi
	;;
abort-upgrade | abort-remove | abort-deconfigure) action=upgrade ;;
1) action=install ;;
[0-9]*) action=upgrade ;;
*)
	warn "postinstall: unknown argument '$1', nothing done"
	exit 0
	;;
esac

# The verdict MESSAGE_ID's explanation for "journalctl -x".
if have journalctl; then
	journalctl --update-catalog || warn "journalctl --update-catalog failed"
fi

if systemd_running; then
	# /sys/fs/bpf/aarsm, where the agent pins its maps (systemd creates it
	# at boot from the same file).
	if have systemd-tmpfiles; then
		systemd-tmpfiles --create aarsm.conf || warn "systemd-tmpfiles --create aarsm.conf failed"
	fi
	systemctl daemon-reload || warn "systemctl daemon-reload failed"
fi

if [ "$action" = install ]; then
	rm -f "$REMOVED_MARKER"
	# Enable or not as the distribution's presets say (Debian: enabled;
	# Fedora and others: disabled unless a preset names aarsm.service).
	# systemctl edits the symlinks itself when systemd is not running.
	if have systemctl; then
		systemctl preset "$UNIT" || warn "systemctl preset $UNIT failed"
		if systemd_running && systemctl is-enabled --quiet "$UNIT"; then
			systemctl start "$UNIT" ||
				warn "$UNIT did not start; see: journalctl -u $UNIT"
		fi
	fi
elif systemd_running; then
	# Only if it was running: an administrator's "stopped" stays stopped.
	# A running agent replaces itself by the new binary in place (same
	# pid, no gap in enforcement, what it holds judged by the new one);
	# one that cannot (an older version, no status socket) is restarted.
	# Changes to the unit's own settings take effect at its next restart.
	pid=$(systemctl show -p MainPID --value "$UNIT" 2>/dev/null || echo 0)
	if systemctl is-active --quiet "$UNIT" && [ "${pid:-0}" -gt 0 ] &&
		/usr/bin/aarsm handover --pid "$pid" --timeout 60s; then
		:
	else
		systemctl try-restart "$UNIT" ||
			warn "$UNIT did not restart; see: journalctl -u $UNIT"
	fi
fi
exit 0
