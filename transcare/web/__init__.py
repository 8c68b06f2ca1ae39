"""The HTTP surface: JSON API, health endpoints, Prometheus metrics and pages."""
