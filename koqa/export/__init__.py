"""`koqa export`: the command (command.py) and the GGUF writer (gguf_file.py)."""
