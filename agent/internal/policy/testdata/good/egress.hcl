egress_policy "postmark-only" {
  description = "postmark-mcp may reach the Postmark API and nothing else"
  mode        = "monitor"
  scope {
    systemd_units = ["postmark-mcp"]
  }
  scope {
    cgroups = ["/system.slice/mcp.slice"]
  }
  scope {
    executables = ["/opt/mcp/bin/*", "/usr/lib/node_modules/postmark-mcp/**"]
  }
  allow {
    hosts = ["api.postmarkapp.com", "API.Example.com."]
    ports = [443]
  }
  allow {
    cidrs = ["10.0.0.0/8", "::1/128", "127.0.0.53"]
  }
}
