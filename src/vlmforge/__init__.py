"""vlmforge: typed, reproducible recipes for training vision-language models.

The library never imports Typer; the command line lives in ``vlmforge_cli``. Heavy libraries
(torch, lightning, open_clip) are imported inside the functions that need them so that
``vlmforge --help`` and ``vlmforge validate`` stay fast.
"""

__version__ = "0.1.0"
