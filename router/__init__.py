"""acd-router: a contact-centre routing engine for Asterisk."""
__version__ = "0.1.0"
