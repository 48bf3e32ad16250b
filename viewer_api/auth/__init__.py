"""Authentication for the HTTP app: who is calling (sessions, bearer tokens, API keys, share links)."""
