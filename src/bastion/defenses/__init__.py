"""Defenses: training-time hardening, data cleaning, and the serve-time transforms around a model."""
