"""Many tenants from one deployment: the registry, each tenant's settings, the fan-out."""
