email_security_policy "company" {
  allowed_destinations {
    internal_domains     = ["@company.com", "@subsidiaries.com"]
    whitelisted_external = ["@stripe.com", "@github.com", "@postmarkapp.com"]
  }
  blocked_actions {
    unauthorized_bcc_recipients   = true
    external_email_forwarding     = true
    bulk_email_to_unknown_domains = true
  }
  content_protection {
    block_api_keys_in_emails         = true
    block_credentials_in_emails      = true
    quarantine_sensitive_attachments = true
  }
  response {
    violation_action    = "terminate_and_alert"
    alert_priority      = "high"
    quarantine_duration = "24h"
  }
}
