egress_policy "mail-mcp" {
  mode = "enforce"
  scope {
    systemd_units = ["postmark-mcp"]
    executables   = ["/usr/bin/node"]
  }
  allow {
    hosts = ["api.postmarkapp.com", "*.example.com", "bad_host!.com", "10.0.0.1"]
    cidrs = ["10.0.0.0/33", "10.1.2.3/8", "not-a-cidr", "::1/128"]
    ports = [443, 0, 70000, "https"]
  }
}

egress_policy "no-allow" {
  scope {
    cgroups = ["/system.slice/x.service"]
  }
}

egress_policy "by-name" {
  scope {
    mcp_servers = ["postmark-mcp"]
  }
  allow {
    cidrs = ["10.0.0.0/8"]
  }
}
