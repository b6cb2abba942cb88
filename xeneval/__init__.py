"""Judicator's evaluation harness: a scenario corpus run on the simulated host, and its score."""
