"""Faults for the CLI under test, installed at interpreter start when this folder is on ``PYTHONPATH``
(``tests/hostile/test_storage.py``). vlmforge itself never imports anything from here.

``FAULT_DISK_ROOT`` + ``FAULT_DISK_BYTES``: that folder behaves as a device of that many bytes
(``small_disk.SmallDisk``).
"""

from __future__ import annotations

import builtins
import io
import os

if os.environ.get("FAULT_DISK_ROOT"):
    from small_disk import SmallDisk

    _disk = SmallDisk(os.environ["FAULT_DISK_ROOT"], int(os.environ["FAULT_DISK_BYTES"]))
    builtins.open = io.open = _disk.open
