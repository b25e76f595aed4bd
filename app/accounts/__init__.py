"""People, roles, invites, web sessions, API tokens and login throttling."""
