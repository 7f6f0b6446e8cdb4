email_security_policy "company" {
  allowed_destinations {
    internal_domains     = ["@company.com"]
    whitelisted_externals = ["@stripe.com"]
  }
  blocked_action {
    unauthorized_bcc_recipients = true
  }
  response {
    violation_action = "block"
    alert_level      = "high"
  }
}

policy "other" {
}
