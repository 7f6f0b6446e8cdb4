email_security_policy "company" {
  mode = "monitoring"

  scope {
    executables = ["usr/bin/node", "/opt/[mcp"]
    commands    = ["a-very-long-command-name"]
  }
  scope {
  }

  allowed_destinations {
    internal_domains     = ["@company..com", "alice@company.com", "*.company.com", "com", "@"]
    whitelisted_external = ["@stripe.com"]
  }
  allowed_destinations {
    internal_domains = ["@other.com"]
  }
  bulk_email {
    max_messages = 0
    window       = "forever"
  }
  response {
    violation_action    = "terminate_and_alrt"
    alert_priority      = "urgent"
    quarantine_duration = "0s"
  }
}

email_security_policy "bad name!" {
  allowed_destinations {
    internal_domains = ["company.com"]
  }
}
