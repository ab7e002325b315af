"""Online experiments: stable A/B arm assignment and the report that says whether the policy pays."""
