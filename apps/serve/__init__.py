"""`deghost serve`: the editing service over HTTP on Ray Serve (service.py holds its Ray-free request checks)."""
