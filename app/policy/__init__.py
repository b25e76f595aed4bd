"""Community policy: the limits every footage request is checked against (DESIGN defaults)."""
