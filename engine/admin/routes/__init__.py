"""Admin route handlers, one module per resource; each exports ``ROUTES``."""
