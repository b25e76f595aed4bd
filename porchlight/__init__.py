"""Porchlight's shared package: what the server, the camera agent and people's tools all use.

It holds the age file format, the transparency log's hashing and verification, the wire
schemas and the API client. It never imports FastAPI or SQLAlchemy, so a Raspberry Pi can
install it without the server's dependencies.
"""

__version__ = "0.1.0"
