# AARSM default policy — installed as /etc/aarsm/policy.d/default.hcl.
#
# It runs in MONITOR mode: violations are reported (syslog/journal at the
# alert_priority below) but no message is blocked, no process killed and no
# copy kept. AARSM cannot know which domains your organisation mails, and an
# enforcing policy without them would stop legitimate mail on the first day.
#
# To enforce:
#   1. list your domains in allowed_destinations below;
#   2. set unknown_recipient_domains = true;
#   3. watch the alerts for a while, then set mode = "enforce";
#   4. run `aarsm policy check /etc/aarsm/policy.d` before reloading.
# hcl/policies/company.hcl is the case study's enforcing policy, as an example.
# The language is described in hcl/REFERENCE.md.

email_security_policy "default" {
  description = "Report e-mail exfiltration by any process on this host"
  mode        = "monitor"

  # No scope block: the policy applies to every process on the host.
  # To limit it, for example to MCP servers run by systemd:
  # scope {
  #   systemd_units = ["*-mcp.service"]
  # }

  allowed_destinations {
    # Your own domains (subdomains included), with or without "@":
    internal_domains = [] # e.g. ["@company.com", "@subsidiaries.com"]
    # External domains mail may go to (but never as Bcc):
    whitelisted_external = [] # e.g. ["@stripe.com", "@github.com"]
  }

  blocked_actions {
    # A Bcc recipient outside internal_domains: the postmark-mcp backdoor.
    # With no internal domain listed, every Bcc recipient is reported.
    unauthorized_bcc_recipients = true
    # A recipient that an MCP server's mail adds to what the AI asked its
    # tool call for (named in none of the call's arguments), whatever the
    # domain. Applies only to MCP servers serving a tool call.
    undeclared_recipients = true
    # A forwarded message (Fwd:, forwarded-message markers, attached
    # message/rfc822) to a recipient outside internal_domains.
    external_email_forwarding = true
    # More than bulk_email.max_messages messages or max_recipients
    # recipients to unknown domains per process within bulk_email.window.
    bulk_email_to_unknown_domains = true
    # Any recipient outside both lists. Off until the lists are filled in,
    # since with empty lists it would report every message.
    unknown_recipient_domains = false
  }

  bulk_email {
    max_messages   = 20
    max_recipients = 50
    window         = "1h"
  }

  content_protection {
    # AWS, GitHub, GitLab, Slack, Stripe, Google, OpenAI, Anthropic keys,
    # JWTs, bearer tokens.
    block_api_keys_in_emails = true
    # Private keys, "password: ..." lines, user:password@ in URLs.
    block_credentials_in_emails = true
    # Keys, keystores, .env files, database dumps as attachments.
    quarantine_sensitive_attachments = true
  }

  response {
    # What enforce mode will do: stop the message, kill the sender, alert.
    violation_action    = "terminate_and_alert"
    alert_priority      = "high"
    quarantine_duration = "24h"
  }
}
