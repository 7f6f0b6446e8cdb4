email_security_policy "company" {
  allowed_destinations {
    internal_domains = ["@company.com", "@subsidiaries.com"
  }
}
