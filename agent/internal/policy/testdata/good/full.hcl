# Every optional setting, for the tests.
email_security_policy "mcp-mailers" {
  description = "MCP e-mail servers may only write to our domains"
  mode        = "enforce"

  scope {
    executables   = ["/usr/bin/node", "/opt/mcp/**"]
    commands      = ["node", "python3*"]
    systemd_units = ["postmark-mcp", "mcp-*.service"]
    cgroups       = ["/system.slice/mcp.slice"]
    mcp_servers   = ["postmark-mcp"]
  }
  scope {
    mcp_servers = ["*-mail*"]
  }

  allowed_destinations {
    internal_domains     = ["company.com", "@Subsidiaries.COM", "bücher.example"]
    whitelisted_external = ["@stripe.com"]
  }
  blocked_actions {
    unauthorized_bcc_recipients   = true
    external_email_forwarding     = false
    bulk_email_to_unknown_domains = true
    unknown_recipient_domains     = true
  }
  bulk_email {
    max_messages   = 5
    max_recipients = 10
    window         = "1d12h"
  }
  content_protection {
    block_api_keys_in_emails         = true
    block_credentials_in_emails      = false
    quarantine_sensitive_attachments = true
  }
  response {
    violation_action    = "quarantine_and_alert"
    alert_priority      = "critical"
    quarantine_duration = "7d"
  }
}

email_security_policy "minimal" {
  allowed_destinations {
    internal_domains = ["example.org"]
  }
}
