"""IPython magics: ``%load_ext tilegate``, then

* ``%tilegate connect URL [--token TOKEN]``: open a session on a gateway;
* ``%tilegate info`` / ``%tilegate cleanup``: show the session / delete it;
* ``%%rust [-o NAME]``, ``%%sql [-o NAME]``, ``%%wasm [-o NAME]``: run the cell; ``-o`` binds the
  result to ``NAME`` (a pandas DataFrame when tabular, the JSON value otherwise).

While a cell runs, a progress bar follows the statement's ``progress``; Ctrl-C cancels it. Errors
show the gateway's message and, for Rust, rustc's diagnostics at the cell's own lines.
"""

import shlex
import sys

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from tilegate.client import Client, StatementError


def _bar(progress: float, width: int = 30) -> None:
    filled = int(progress * width)
    sys.stdout.write("\r[" + "#" * filled + "." * (width - filled) + f"] {progress * 100:5.1f}%")
    sys.stdout.flush()
    if progress >= 1.0:
        sys.stdout.write("\r" + " " * (width + 10) + "\r")


@magics_class
class TilegateMagics(Magics):
    """The magics; one session per IPython kernel."""

    client = None
    session = None

    @line_magic
    def tilegate(self, line: str):
        """``%tilegate connect URL [--token TOKEN]``, ``%tilegate info``, ``%tilegate cleanup``."""
        words = shlex.split(line)
        if not words:
            print(self.tilegate.__doc__)
            return None
        command = words[0]
        if command == "connect":
            if len(words) < 2:
                raise ValueError("usage: %tilegate connect URL [--token TOKEN]")
            token = words[words.index("--token") + 1] if "--token" in words else None
            self.client = Client(words[1], token=token)
            self.session = self.client.create_session()
            print(f"tilegate session {self.session} on {words[1]}")
            return None
        if command == "info":
            return self._client().session(self.session)
        if command == "cleanup":
            if self.client is not None and self.session is not None:
                self.client.delete_session(self.session)
                print(f"deleted session {self.session}")
            self.session = None
            return None
        raise ValueError(f"unknown %tilegate command {command!r}: use connect, info or cleanup")

    def _client(self) -> Client:
        if self.client is None or self.session is None:
            raise RuntimeError("not connected: run %tilegate connect URL first")
        return self.client

    def _run(self, kind: str, line: str, cell: str):
        words = shlex.split(line)
        name = words[words.index("-o") + 1] if "-o" in words else None
        client = self._client()
        try:
            result = client.run(self.session, cell, kind=kind, on_progress=_bar)
        except StatementError as error:
            print(error.render(), file=sys.stderr)
            return None
        value = result.json
        table = result.frame() if value is not None else None
        if name:
            self.shell.user_ns[name] = table if table is not None else value
        if result.text:
            print(result.text)
        return None

    @cell_magic
    def rust(self, line: str, cell: str):
        """Runs the cell as a ``rust`` statement; ``-o NAME`` binds the result."""
        return self._run("rust", line, cell)

    @cell_magic
    def sql(self, line: str, cell: str):
        """Runs the cell as an ``sql`` statement; ``-o NAME`` binds the rows as a DataFrame."""
        return self._run("sql", line, cell)

    @cell_magic
    def wasm(self, line: str, cell: str):
        """Runs the cell as a ``wasm`` statement (WAT text or base64); ``-o NAME`` binds the result."""
        return self._run("wasm", line, cell)
