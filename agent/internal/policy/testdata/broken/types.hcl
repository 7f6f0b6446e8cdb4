email_security_policy "company" {
  mode = ["enforce"]
  allowed_destinations {
    internal_domains     = "@company.com"
    whitelisted_external = ["@stripe.com", 42, true]
  }
  blocked_actions {
    unauthorized_bcc_recipients = "yes"
    external_email_forwarding   = 1
  }
  bulk_email {
    max_messages   = "ten"
    max_recipients = 2.5
    window         = 3600
  }
  response {
    quarantine_duration = var.duration
  }
}
