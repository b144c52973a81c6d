"""`koqa serve`: settings (config), requests (requests) and the server (app)."""
