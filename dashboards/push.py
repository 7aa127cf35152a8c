"""``emostream dashboards push``: send this folder's dashboards to a Grafana that exists already.

``docker compose up`` provisions the dashboards from files; this is for every other Grafana
(a shared company one, Grafana Cloud). It talks to Grafana through ``grafana-client``, the
maintained successor of the unmaintained ``grafana-api``.

The pure parts (datasource rewrite, payload) are plain functions the tests call directly; the
Grafana-talking part is :class:`Grafana`, three calls that turn every failure into a
:class:`PushError` carrying the exit code, so the CLI never shows a traceback.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import SplitResult, urlsplit

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaException, GrafanaTimeoutError

from emostream.dashboards.catalog import DASHBOARD_DIR, Dashboard, load

MESSAGE = "emostream dashboards push"
#: How every dashboard of this folder names its datasource (provisioning/datasources/).
PROVISIONED_DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
TIMEOUT_S = 10.0

EXIT_GRAFANA = 1  # Grafana answered with an error
EXIT_USAGE = 2  # bad URL, Grafana unreachable, no or bad dashboard files
EXIT_REFUSED = 4  # 401/403: the token (or anonymous access) was refused


class PushError(Exception):
    """A failure to report in one line, with the exit code that goes with it."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Pushed:
    title: str
    uid: str
    url: str


# --- pure parts ---------------------------------------------------------------------------


def rewrite_datasource(model: Any, uid: str) -> Any:
    """A copy of ``model`` with every ``{"type": "prometheus", "uid": "prometheus"}`` now ``uid``.

    Walks the whole model (panels, their targets, templating, annotations), so a Grafana whose
    Prometheus datasource has another uid gets working panels without hand-editing JSON.
    """
    if isinstance(model, Mapping):
        if model.get("type") == "prometheus" and model.get("uid") == "prometheus":
            return {**model, "uid": uid}
        return {k: rewrite_datasource(v, uid) for k, v in model.items()}
    if isinstance(model, list):
        return [rewrite_datasource(v, uid) for v in model]
    return model


def payload(
    dashboard: Dashboard, folder_uid: str, datasource_uid: str | None = None
) -> dict[str, Any]:
    """The body of ``POST /api/dashboards/db`` for ``dashboard``.

    ``id`` is dropped (None) because ids are per Grafana instance: with the uid and
    ``overwrite`` the same body creates or replaces the dashboard on any Grafana.
    """
    model = copy.deepcopy(dict(dashboard.model))
    if datasource_uid is not None:
        model = rewrite_datasource(model, datasource_uid)
    model["id"] = None
    return {"dashboard": model, "folderUid": folder_uid, "overwrite": True, "message": MESSAGE}


def folder_uid_for(title: str) -> str:
    """A Grafana folder uid from a title: ``emostream`` → ``emostream`` (40 chars at most)."""
    uid = re.sub(r"[^A-Za-z0-9_-]+", "-", title.strip()).strip("-").lower()[:40]
    if not uid:
        raise PushError(
            f"folder title {title!r} gives no usable uid; pass --folder-uid", EXIT_USAGE
        )
    return uid


def check_url(url: str) -> SplitResult:
    """``url`` parsed, or a :class:`PushError` saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise PushError(f"--url {url!r}: {exc}", EXIT_USAGE) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PushError(
            f"--url {url!r}: give the Grafana base URL as http(s)://HOST[:PORT][/PATH], "
            "e.g. http://localhost:3000",
            EXIT_USAGE,
        )
    return parts


def _origin(parts: SplitResult) -> str:
    """``scheme://host:port`` without credentials, for messages and dashboard links."""
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


# --- the Grafana-talking part -------------------------------------------------------------


class _Folders(Protocol):  # the slice of grafana_client's Folder element used here, typed
    def get_folder(self, uid: str) -> Any: ...
    def get_all_folders(self) -> Any: ...
    def create_folder(self, title: str, uid: str | None = None) -> Any: ...


class _Dashboards(Protocol):
    def update_dashboard(self, dashboard: dict[str, Any]) -> Any: ...


class Grafana:
    """The calls a push makes, with grafana-client's exceptions turned into PushError."""

    def __init__(self, url: str, token: str | None) -> None:
        parts = check_url(url)
        self.origin = _origin(parts)
        auth: str | tuple[str, str] | None = token or None
        self._who = "the token"
        if auth is None and parts.username and parts.password:
            auth = (parts.username, parts.password)  # http://user:password@host basic auth
            self._who = "the user and password in --url"
        elif auth is None:
            self._who = "anonymous access (give --token)"
        prefix = parts.path.strip("/")
        api = GrafanaApi(
            auth=auth,
            host=f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname,
            port=parts.port,
            url_path_prefix=f"{prefix}/" if prefix else "",
            protocol=parts.scheme,
            timeout=TIMEOUT_S,
        )
        self._folders: _Folders = api.folder
        self._dashboards: _Dashboards = api.dashboard

    def ensure_folder(self, title: str, uid: str) -> tuple[str, bool]:
        """The uid of the folder to push into, and whether it had to be created.

        Found by uid first, then by title (a Grafana that provisioned the folder from files
        gave it a random uid, and refuses a second folder with the same title).
        """
        if self._call(lambda: self._folders.get_folder(uid), missing_ok=True) is not None:
            return uid, False
        for f in self._call(self._folders.get_all_folders):
            if isinstance(f, dict) and f.get("title") == title and f.get("uid"):
                return str(f["uid"]), False
        created = self._object(lambda: self._folders.create_folder(title, uid=uid))
        return str(created.get("uid") or uid), True

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/dashboards/db``; Grafana's answer (``uid``, ``url``, ``version`` …)."""
        return self._object(lambda: self._dashboards.update_dashboard(body))

    def _object(self, fn: Callable[[], Any]) -> dict[str, Any]:
        out = self._call(fn)
        if not isinstance(out, dict):
            raise PushError(f"{self.origin} answered {out!r:.200}, not a JSON object", EXIT_GRAFANA)
        return out

    def _call(self, fn: Callable[[], Any], *, missing_ok: bool = False) -> Any:
        """``fn()``'s JSON answer; None for a 404 when ``missing_ok``; else a PushError."""
        try:
            out = fn()
        except GrafanaTimeoutError:
            raise PushError(
                f"Grafana at {self.origin} did not answer within {TIMEOUT_S:g} s", EXIT_USAGE
            ) from None
        except GrafanaException as exc:
            if missing_ok and exc.status_code == 404:
                return None
            raise self._refusal(exc) from None
        except OSError as exc:  # niquests' ConnectionError and friends: nothing answered
            raise PushError(
                f"cannot reach Grafana at {self.origin}: {_reason(exc)}", EXIT_USAGE
            ) from None
        if not isinstance(out, dict | list):
            raise PushError(
                f"{self.origin} did not answer like Grafana (is --url the Grafana base URL?)",
                EXIT_GRAFANA,
            )
        return out

    def _refusal(self, exc: GrafanaException) -> PushError:
        status = int(exc.status_code or 0)
        body = exc.response
        said = body["message"] if isinstance(body, dict) and "message" in body else exc.message
        if status in (401, 403):
            return PushError(f"Grafana refused {self._who}: {status} {said}", EXIT_REFUSED)
        if status == 0:  # a transport error that grafana-client wrapped
            return PushError(f"cannot reach Grafana at {self.origin}: {said}", EXIT_USAGE)
        return PushError(f"Grafana at {self.origin} answered {status}: {said}", EXIT_GRAFANA)


def _reason(exc: BaseException) -> str:
    """The innermost cause ("Connection refused"), not urllib3's pool bookkeeping."""
    inner = exc
    while (deeper := inner.__cause__ or inner.__context__) is not None:
        inner = deeper
    text = str(inner) or type(inner).__name__
    m = re.search(r"\[Errno -?\d+\] ([^')\]]+)", text)
    return m.group(1).strip() if m else text


# --- the command ----------------------------------------------------------------------------


def push(
    url: str,
    token: str | None,
    *,
    folder: str = "emostream",
    folder_uid: str | None = None,
    datasource_uid: str | None = None,
    directory: Path = DASHBOARD_DIR,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
    note: Callable[[str], None] = print,
) -> list[Pushed]:
    """Push every dashboard of ``directory`` into ``folder`` (created when missing).

    ``echo`` gets the result (one line per dashboard; in a dry run, each request that would
    be sent), ``note`` the progress and warnings, so that stdout stays parseable.
    """
    parts = check_url(url)
    dashboards = _load(directory)
    uid = folder_uid or folder_uid_for(folder)
    origin = _origin(parts)
    if dry_run:
        note(f"dry run: nothing is sent to {origin}")
        echo(f"GET /api/folders/{uid}")
        echo(
            "POST /api/folders "
            + json.dumps({"title": folder, "uid": uid}, ensure_ascii=False)
            + "  (if missing)"
        )
        for d in dashboards:
            echo(
                "POST /api/dashboards/db "
                + json.dumps(payload(d, uid, datasource_uid), ensure_ascii=False)
            )
        return [Pushed(d.title, d.uid, f"{origin}/d/{d.uid}") for d in dashboards]
    if not token and not parts.password:
        note("no token (--token or EMOSTREAM_GRAFANA_TOKEN): trying anonymous access")
    grafana = Grafana(url, token)
    uid, created = grafana.ensure_folder(folder, uid)
    note(f"folder {folder!r} (uid {uid}) {'created' if created else 'exists'} on {origin}")
    out = []
    for d in dashboards:
        answer = grafana.post(payload(d, uid, datasource_uid))
        link = str(answer.get("url") or f"/d/{d.uid}")
        pushed = Pushed(
            d.title,
            str(answer.get("uid") or d.uid),
            link if "://" in link else f"{origin}/{link.lstrip('/')}",
        )
        echo(f"{pushed.title}  {pushed.uid}  {pushed.url}")
        out.append(pushed)
    return out


def _load(directory: Path) -> list[Dashboard]:
    if not directory.is_dir():
        raise PushError(f"{directory}: not a folder", EXIT_USAGE)
    try:
        found = load(directory)
    except (ValueError, OSError) as exc:  # bad JSON, not a dashboard, unreadable
        raise PushError(str(exc), EXIT_USAGE) from None
    if not found:
        raise PushError(f"no dashboard (*.json) in {directory}", EXIT_USAGE)
    return found
