def make(**kwargs):
    """A per-worker factory whose set-up always fails (a client that cannot connect)."""
    raise ConnectionRefusedError("cannot reach the service on 127.0.0.1:9")
