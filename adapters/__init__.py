"""Provider wire formats: canonical types and one pure codec package per provider."""
