"""The contracts other consumers read: topic specs, JSON Schemas and matching Python models."""
