"""Client and IPython magics for the tilegate gateway.

>>> from tilegate import Client
>>> client = Client("http://127.0.0.1:8998")
>>> session = client.create_session()
>>> client.run(session, "6 * 7").json
42

In IPython or Jupyter: ``%load_ext tilegate``, then ``%tilegate connect URL`` and ``%%rust``,
``%%sql`` or ``%%wasm`` cells (see :mod:`tilegate.magics`).
"""

from tilegate.client import Client, Result, StatementError, TilegateError

__all__ = ["Client", "Result", "StatementError", "TilegateError", "load_ipython_extension"]


def load_ipython_extension(ipython):
    """Registers the magics (``%load_ext tilegate``)."""
    from tilegate.magics import TilegateMagics

    ipython.register_magics(TilegateMagics)
