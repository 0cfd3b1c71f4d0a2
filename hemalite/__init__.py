"""hemalite: a leukaemia smear-screening model for the Raspberry Pi.

A research and screening aid, not a diagnosis: every result goes to a morphologist.
The shared contract lives here (numpy + Pillow only); the stages are hemalite.train,
hemalite.convert, hemalite.edge and hemalite.benchmarks.
"""
__version__ = "0.1.0"

DISCLAIMER = ("hemalite is a research and screening aid, not a diagnosis: "
              "every result must be reviewed by a morphologist.")
