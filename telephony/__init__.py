"""Consent-aware call recording service."""
