"""The Porchlight community server (FastAPI)."""
