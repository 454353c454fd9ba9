"""Objectives and samplers as small functions; networks are passed in."""
