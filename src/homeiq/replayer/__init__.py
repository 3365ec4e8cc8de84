"""The replayer: reclaims entries left pending by dead or stuck writers; the operator's CLI."""
