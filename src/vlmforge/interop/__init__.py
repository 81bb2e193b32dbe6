"""Exports of trained runs to other libraries' formats."""
