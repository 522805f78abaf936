"""The history of a nightly root (DESIGN §12c): ``store`` (SQLite index rebuilt from the run directories),
``series`` (what makes nights comparable, the figures kept), ``detect`` (change points and the verdict),
``page`` (history.html), ``command`` (``loadgen history``)."""
