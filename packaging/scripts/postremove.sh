#!/bin/sh
# aarsm: postrm (deb) / %postun (rpm).
#
# Arguments:
#   deb  remove                  files gone, configuration kept
#        purge                   also delete configuration and state
#        upgrade|failed-upgrade|abort-install|abort-upgrade|disappear ...
#   rpm  0                       real removal (rpm has no purge: the state
#                                in /var/lib/aarsm is kept)
#        1 (or more)             upgrade: nothing to do here
set -e

have() { command -v "$1" >/dev/null 2>&1; }
systemd_running() { [ -d /run/systemd/system ]; }
warn() { echo "aarsm: $*" >&2; }

case "$1" in
remove | purge | 0) ;;
*) exit 0 ;;
esac

# Maps (and links) pinned by the agent outlive it: a pinned probe would
# keep judging, or holding, processes with no agent to answer.
if [ -d /sys/fs/bpf/aarsm ]; then
	rm -rf /sys/fs/bpf/aarsm || warn "could not remove /sys/fs/bpf/aarsm"
fi

if systemd_running; then
	systemctl daemon-reload || warn "systemctl daemon-reload failed"
	systemctl reset-failed aarsm.service >/dev/null 2>&1 || true
fi
if have journalctl; then
	journalctl --update-catalog || warn "journalctl --update-catalog failed"
fi

if [ "$1" = purge ]; then
	# Quarantined messages and other state; the status socket directory.
	rm -rf /var/lib/aarsm /run/aarsm
	# dpkg removes the conffiles; drop what the administrator added.
	rm -rf /etc/aarsm
fi
exit 0
