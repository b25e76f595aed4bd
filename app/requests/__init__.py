"""Footage requests: warrant-backed requests, reviews, asks to devices, consents, shared clips.

Spec: DESIGN "Request lifecycle" and "How a clip is shared"; HTTP contract in
docs/requests-api.md. Lifecycles live in `transitions` (one table each); `service` holds
requests and reviews, `asks` asks and consents, `uploads` shared clips, `matching` the fan-out.
"""
