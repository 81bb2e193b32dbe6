"""What every training verb shares about a run: its directory and resume rules (``directory``), how it
starts and what it returns (``lifecycle``), and what a finished run leaves behind (``artifacts``)."""
