"""drone_cli — the ``drone`` command line tool. It sits on top of the packages; nothing imports it."""

__all__: list[str] = []
