"""Payroll: PDFs in, payroll_entries out (extraction, checks, name resolution, dual-write)."""
