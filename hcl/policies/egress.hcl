# An egress policy: the safety net for what AARSM cannot read. The
# processes of the postmark-mcp unit may open connections (TCP and UDP,
# IPv4 and IPv6) only to the Postmark API on 443 and to the local resolver;
# anything else fails with EPERM, is counted and journaled once per
# process and destination.
#
# An example, installed under /usr/share/doc/aarsm/examples/ and never
# into /etc/aarsm/policy.d: copy it there and adapt it (the unit, the
# hosts), check it with "aarsm policy check", then "systemctl reload aarsm".
# Start in monitor mode: see what it would refuse ("journalctl
# MESSAGE_ID=64e04d0ecb8e478bbfaa1d06f145671b") before you enforce.

egress_policy "postmark-mcp-egress" {
  description = "postmark-mcp reaches the Postmark API and nothing else"
  mode        = "monitor"

  scope {
    systemd_units = ["postmark-mcp"]
  }

  allow {
    hosts = ["api.postmarkapp.com"]
    ports = [443]
  }

  # Name resolution goes through the resolver in /etc/resolv.conf: allow
  # it, or the process cannot resolve api.postmarkapp.com at all.
  allow {
    cidrs = ["127.0.0.53/32", "::1/128"]
    ports = [53]
  }
}
