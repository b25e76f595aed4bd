"""The transparency log's formats and verification, as pure code (no web, no database).

- `merkle`: RFC 6962 hashing, proofs and their verification (RFC 9162 section 2.1).
- `note`: signed notes (c2sp.org/signed-note) with Ed25519 keys.
- `checkpoint`: checkpoints (c2sp.org/tlog-checkpoint) and cosignatures (c2sp.org/tlog-cosignature).
- `tiles`: tile and entry-bundle layout (c2sp.org/tlog-tiles).
- `verify`: a full verifier over a directory or an HTTP log.
"""
