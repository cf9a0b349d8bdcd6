"""The daemon's side of the API: the Unix-socket server and the backend it serves from."""
