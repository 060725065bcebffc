"""An HTTP client for the tilegate gateway (Livy's REST API); needs only ``requests``."""

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import requests


class TilegateError(Exception):
    """The gateway refused a request (its JSON ``msg``)."""

    def __init__(self, status: int, msg: str):
        super().__init__(f"{status}: {msg}")
        self.status = status
        self.msg = msg


class StatementError(Exception):
    """A statement ran and failed: Livy's ``ename``, ``evalue`` and ``traceback``."""

    def __init__(self, ename: str, evalue: str, traceback: list):
        super().__init__(f"{ename}: {evalue}")
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback

    def render(self) -> str:
        """The error as a user reads it: the message, then rustc's diagnostics or the backtrace."""
        return f"{self.ename}: {self.evalue}\n" + "".join(self.traceback)


@dataclass
class Result:
    """A statement's output: ``json`` (``application/json``) and ``text`` (``text/plain``)."""

    json: Any = None
    text: str = ""
    statement: int = 0
    data: dict = field(default_factory=dict)

    def frame(self):
        """The result as a pandas DataFrame when it is tabular (Livy sql output, or a list of
        objects such as a job's rows), else ``None``."""
        import pandas

        j = self.json
        if isinstance(j, dict) and "schema" in j and "data" in j:
            columns = [f["name"] for f in j["schema"]["fields"]]
            return pandas.DataFrame(j["data"], columns=columns)
        if isinstance(j, list) and j and all(isinstance(r, dict) for r in j):
            return pandas.DataFrame(j)
        return None


class Client:
    """One gateway. ``token`` is sent as a bearer token when given."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.http = requests.Session()
        self.http.headers["X-Requested-By"] = "tilegate-python"
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        response = self.http.request(method, self.url + path, json=body, timeout=self.timeout)
        try:
            payload = response.json()
        except ValueError:
            payload = {"msg": response.text}
        if response.status_code >= 400:
            raise TilegateError(response.status_code, payload.get("msg", str(payload)))
        return payload

    def version(self) -> dict:
        return self._call("GET", "/version")

    def create_session(self, kind: str = "shared", language: Optional[str] = None, name: Optional[str] = None) -> int:
        """Creates a session and returns its id. ``language`` (``rust``, ``wasm``, ``sql``) sets
        the default for statements without a kind."""
        body: dict = {"kind": kind}
        if name:
            body["name"] = name
        if language:
            body["conf"] = {"tilegate.kind": language}
        return self._call("POST", "/sessions", body)["id"]

    def session(self, session: int) -> dict:
        return self._call("GET", f"/sessions/{session}")

    def delete_session(self, session: int) -> None:
        self._call("DELETE", f"/sessions/{session}")

    def cancel(self, session: int, statement: int) -> None:
        self._call("POST", f"/sessions/{session}/statements/{statement}/cancel")

    def run(
        self,
        session: int,
        code: str,
        kind: str = "rust",
        on_progress: Optional[Callable[[float], None]] = None,
    ) -> Result:
        """Runs a statement and waits for it, reporting ``progress`` (0..1) to ``on_progress``.
        Ctrl-C (``KeyboardInterrupt``) cancels it on the gateway before re-raising.

        Raises :class:`StatementError` when it fails."""
        statement = self._call("POST", f"/sessions/{session}/statements", {"code": code, "kind": kind})["id"]
        pause, last = 0.002, -1.0
        try:
            while True:
                # A long poll: the gateway answers when the statement finishes, or after 0.25 s
                # with its progress. A server that answers at once is polled with a growing pause.
                asked = time.monotonic()
                current = self._call("GET", f"/sessions/{session}/statements/{statement}?wait=0.25")
                progress = float(current.get("progress") or 0.0)
                if on_progress and progress != last:
                    on_progress(progress)
                    last = progress
                if current["state"] in ("available", "cancelled", "error"):
                    break
                if time.monotonic() - asked < 0.125:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.2)
        except KeyboardInterrupt:
            self.cancel(session, statement)
            raise
        output = current.get("output")
        if output is None:
            raise StatementError("Cancelled", "the statement was cancelled", [])
        if output["status"] == "error":
            raise StatementError(output["ename"], output["evalue"], output.get("traceback", []))
        data = output.get("data", {})
        return Result(json=data.get("application/json"), text=data.get("text/plain", ""), statement=statement, data=data)

    def sql(self, session: int, query: str):
        """Runs a query and returns every row as a pandas DataFrame (downloading the whole result
        when the output was capped)."""
        import io

        import pandas

        result = self.run(session, query, kind="sql")
        if isinstance(result.json, dict) and result.json.get("truncated"):
            path = f"/sessions/{session}/statements/{result.statement}/result"
            response = self.http.get(self.url + path, params={"format": "jsonl"}, timeout=self.timeout)
            if response.status_code >= 400:
                raise TilegateError(response.status_code, response.text)
            return pandas.read_json(io.StringIO(response.text), lines=True)
        return result.frame()
