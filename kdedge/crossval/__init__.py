"""Cross-validation: the cv driver, its fold files and the report."""
