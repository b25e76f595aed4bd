"""Camera devices: enrolment codes, Ed25519 device keys, credentials, signed replay-safe calls."""
