"""Benchmark kit: synthetic images with ground-truth masks and small bundled models."""
