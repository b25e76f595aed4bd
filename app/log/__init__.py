"""The verifiable log for auditors: tree nodes, signed checkpoints, tiles, proofs, cosignatures.

Entries themselves are appended by `app.audit.service.append`; this package stores the tree's
hashes alongside (same transaction), signs checkpoints with the log key, serves c2sp
tlog-tiles, and accepts auditors' cosignatures (c2sp tlog-cosignature).
"""
