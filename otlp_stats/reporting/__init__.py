"""Reporting: prints each closed window's report."""
