"""acd-router: a contact-centre routing engine for Asterisk."""
from router import _twins

__version__ = "0.1.0"
TWINS_COMPILED = _twins.COMPILED     # the engine's hot path runs compiled (see router/_twins.py)
