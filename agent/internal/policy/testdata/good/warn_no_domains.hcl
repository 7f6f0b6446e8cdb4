email_security_policy "secrets-only" {
  content_protection {
    block_api_keys_in_emails = true
  }
}
