"""ISO/IEC 17025 reporting: equipment register, uncertainty, decision rules, report rendering.

Kept light on import: the station loader imports the register models from here, so plotting
(matplotlib), PDF (WeasyPrint) and MF4 (asammdf) are imported only by the modules that need them.
"""
