"""pytest plugin of iampool.testing (fixtures arrive with the gateway wiring)."""
