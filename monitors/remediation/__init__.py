"""Opt-in remediation: add a missing device to its ETG, restore the provisioning client owner."""
