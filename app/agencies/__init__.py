"""Requesting agencies (police, court-appointed investigators) and their age recipients."""
