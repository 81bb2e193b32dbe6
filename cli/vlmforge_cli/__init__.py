"""Command-line interface of vlmforge (Typer). Holds no ML logic: it calls ``vlmforge.<verb>.run``."""
