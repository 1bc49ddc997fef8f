"""Entity group transactions without the multipart machinery of azure-core.

``TableClient.submit_transaction`` builds its ``multipart/mixed`` body and parses the answer
with the standard ``email`` package; measured on a first scan, that encoding was most of the
time spent writing deployment records. This module writes the same wire format with plain
bytes formatting and parses the answer by hand. The request still goes through the table
client's own pipeline, so authentication (SharedKey or Entra ID), retries, the user agent and
the ``x-ms-version`` header stay the SDK's, and errors are the SDK's own exception types,
built the way the SDK builds them.

The wire format follows "Performing entity group transactions" (Azure Table storage REST API):
``POST {account}/$batch``, one batch holding exactly one change set, each operation an
``application/http`` part with its own ``Content-ID``; the answer is ``202 Accepted`` holding
one change set response with a part per operation, or, when the change set fails, the failing
operation's error alone, whose message starts with ``<index>:`` (the operation's position).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.core.utils import CaseInsensitiveDict
from azure.data.tables import RequestTooLargeError, TableEntity, TableTransactionError, UpdateMode
from azure.data.tables._error import _decode_error, _validate_tablename_error
from azure.data.tables._serialize import _add_entity_properties
from azure.data.tables.aio import TableClient

# The SDK's own error decoding, so a failure here is the exception its transactions raise
# (untyped in the SDK, hence the annotations).
_decode: Callable[..., HttpResponseError] = _decode_error
_check_table_name: Callable[[HttpResponseError, str], None] = _validate_tablename_error

# ("upsert", entity, {"mode": ...}), ("create", entity), ("update", entity, {"mode", "etag",
# "match_condition"}), ("delete", entity[, {"etag", "match_condition"}]): the SDK's tuples.
Operation = tuple[Any, ...]

# Performing entity group transactions: at most 100 entities, all of one partition.
MAX_OPERATIONS = 100
_CRLF = b"\r\n"
_OPTIONS = {"mode", "etag", "match_condition"}


async def submit(table: TableClient, operations: Sequence[Operation]) -> list[dict[str, Any]]:
    """Commit ``operations`` as one transaction: all of them or none.

    Returns each operation's metadata (``etag``), in order, as ``submit_transaction`` does.
    Raises ``TableTransactionError`` naming the failing operation (``.index``, ``.error_code``)
    when the service refuses one, ``RequestTooLargeError`` for a body over the service's limit,
    and ValueError, before sending, for what the service would refuse whole: more than 100
    operations, or entities of more than one partition."""
    if not operations:
        return []
    account = f"{table.scheme}://{table._primary_hostname}"
    boundary = f"batch_{uuid.uuid4()}"
    body = encode_batch(f"{account}/{table.table_name}", operations, boundary)
    request = HttpRequest(
        "POST",
        f"{account}/$batch",
        headers={
            "x-ms-version": table.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": f"multipart/mixed; boundary={boundary}",
            "Accept": "application/json",
        },
        content=body,
    )
    # Streamed, as the SDK's own transactions are: the pipeline would otherwise try to decode
    # the multipart answer as JSON or XML.
    response = await table._client.send_request(request, stream=True)
    await response.read()
    return decode_answer(response, len(operations), table.table_name)


# --- the request ------------------------------------------------------------------------------


def encode_batch(table_url: str, operations: Sequence[Operation], boundary: str) -> bytes:
    """The ``multipart/mixed`` body of one batch holding one change set."""
    if len(operations) > MAX_OPERATIONS:
        raise ValueError(
            f"A transaction holds at most {MAX_OPERATIONS} operations; got {len(operations)}"
        )
    partitions = {_entity(op).get("PartitionKey") for op in operations}
    if len(partitions) > 1:
        raise ValueError("Partition Keys in the batch must all be the same.")
    changeset = f"changeset_{uuid.uuid4()}".encode()
    out = [
        b"--" + boundary.encode(),
        b"Content-Type: multipart/mixed; boundary=" + changeset,
        b"",
    ]
    for index, operation in enumerate(operations):
        out += [
            b"--" + changeset,
            b"Content-Type: application/http",
            b"Content-Transfer-Encoding: binary",
            b"Content-ID: " + str(index).encode(),
            b"",
            _encode_operation(table_url, operation),
        ]
    out += [b"--" + changeset + b"--", b"--" + boundary.encode() + b"--", b""]
    return _CRLF.join(out)


def _entity(operation: Operation) -> Mapping[str, Any]:
    if len(operation) not in (2, 3) or not isinstance(operation[1], Mapping):
        raise TypeError("An operation is (name, entity) or (name, entity, options)")
    entity: Mapping[str, Any] = operation[1]
    if "PartitionKey" not in entity or "RowKey" not in entity:
        raise ValueError("PartitionKey and/or RowKey were not provided in entity")
    return entity


def _encode_operation(table_url: str, operation: Operation) -> bytes:
    """One operation as an HTTP request inside the change set, as the Table service expects
    it: Insert Entity (POST), Insert Or Replace / Update (PUT), Insert Or Merge / Merge
    (PATCH), Delete Entity (DELETE)."""
    name = str(operation[0]).lower()
    entity = _entity(operation)
    options: Mapping[str, Any] = operation[2] if len(operation) == 3 else {}
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ValueError(f"Unsupported transaction options: {sorted(unknown)}")
    mode = options.get("mode", UpdateMode.MERGE)
    if mode not in (UpdateMode.MERGE, UpdateMode.REPLACE):
        raise ValueError(f"Mode type '{mode}' is not supported.")
    headers = [b"DataServiceVersion: 3.0", b"Accept: application/json;odata=minimalmetadata"]
    if name == "create":
        # "Setting the Prefer header to manage response echo on insert operations": with
        # return-no-content the answer is a bare 204 with the ETag, not the entity echoed.
        method, url = "POST", table_url
        headers.append(b"Prefer: return-no-content")
    elif name in ("upsert", "update", "delete"):
        method = "DELETE" if name == "delete" else "PUT" if mode == UpdateMode.REPLACE else "PATCH"
        url = f"{table_url}{_entity_path(entity)}"
        if name != "upsert":
            # "Update Entity", "Delete Entity": If-Match is required; "*" matches any version.
            headers.append(b"If-Match: " + _if_match(entity, options).encode())
    else:
        raise ValueError(f"Unrecognized operation: {operation[0]}")
    lines = [f"{method} {url} HTTP/1.1".encode(), *headers]
    if method == "DELETE":
        return _CRLF.join([*lines, b"", b""])
    # Compact UTF-8, as json.dumps(separators=(",", ":"), ensure_ascii=False) wrote it; a
    # float NaN or infinity never gets here, the SDK's conversion has made it an Edm.Double.
    payload = orjson.dumps(_properties(entity))
    lines += [b"Content-Type: application/json", b"Content-Length: %d" % len(payload)]
    return _CRLF.join([*lines, b"", payload])


def _entity_path(entity: Mapping[str, Any]) -> str:
    # Keys inside quotes double their single quotes, then the whole is percent-encoded: what
    # the SDK's request builders send (_prepare_key, then the URL serializer).
    return "(PartitionKey='{}',RowKey='{}')".format(
        *(_quote(entity[k]) for k in ("PartitionKey", "RowKey"))
    )


def _quote(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError("PartitionKey or RowKey must be of type string.")
    return quote(key.replace("'", "''"), safe="")


def _if_match(entity: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """The SDK's rules for etag and match_condition."""
    etag = options.get("etag")
    condition = options.get("match_condition") or MatchConditions.Unconditionally
    if condition == MatchConditions.IfNotModified:
        if not etag and isinstance(entity, TableEntity):
            etag = entity.metadata.get("etag")
        if not etag:
            raise ValueError("IfNotModified must be specified with etag.")
        return str(etag)
    if condition == MatchConditions.Unconditionally:
        if etag:
            raise ValueError("Etag is not supported for an Unconditional operation.")
        return "*"
    raise ValueError(f"Unsupported match condition: {condition}")


def _properties(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The SDK's serialization of an entity, less the ``Edm.String`` annotations: a JSON
    string property is an Edm.String without one ("Payload format for Table service
    operations"), and dropping them makes a deployment record about a quarter lighter on the wire.
    Plain strings and UTC times, most properties, skip the SDK's per-property conversion,
    which was half the cost of encoding a transaction."""
    out: dict[str, Any] = {}
    typed: dict[str, Any] = {}
    for name, value in entity.items():
        if type(value) is str:
            out[name] = value
        elif type(value) is datetime and value.tzinfo is UTC:
            # The SDK's own text (astimezone(UTC), then "%Y-%m-%dT%H:%M:%S.%fZ") for the UTC
            # times every record holds, at a sixth of the cost of its conversion.
            out[name] = value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
            out[name + "@odata.type"] = "Edm.DateTime"
        elif value is not None:
            typed[name] = value
    if typed:
        out.update(
            (name, value)
            for name, value in _add_entity_properties(typed).items()
            if not (value == "Edm.String" and name.endswith("@odata.type"))
        )
    return out


# --- the answer -------------------------------------------------------------------------------


class _Part:
    """One operation's answer inside the change set response, shaped as the SDK's error
    decoding reads a response: status, reason, headers, text. Headers are parsed when first
    read: a stored row's answer is wanted only for its ETag."""

    def __init__(self, status_code: int, reason: str, head: list[str], body: bytes):
        self.status_code = status_code
        self.reason = reason
        self._head = head
        self._headers: CaseInsensitiveDict | None = None
        self.body = body

    @property
    def headers(self) -> CaseInsensitiveDict:
        if self._headers is None:
            self._headers = _headers(self._head)
        return self._headers

    @property
    def content_type(self) -> str | None:
        found: str | None = self.headers.get("Content-Type")
        return found

    def etag(self) -> str | None:
        for line in self._head:
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() == "etag":
                return value.strip()
        return None

    def text(self, encoding: str | None = None) -> str:
        return self.body.decode(encoding or "utf-8", errors="replace")


def decode_answer(response: Any, expected: int, table_name: str) -> list[dict[str, Any]]:
    """Each operation's metadata, or the exception ``submit_transaction`` raises for the same
    answer."""
    if response.status_code == 413:
        raise _too_large(response)
    if response.status_code != 202:
        raise _checked(_decode(response), table_name)
    parts = _parts(response.content, response.headers.get("Content-Type", ""))
    failed = [p for p in parts if not 200 <= p.status_code < 300]
    if failed and failed[0].status_code == 413:
        raise _too_large(response)
    if failed:
        raise _checked(_decode(failed[0], error_type=TableTransactionError), table_name)
    if len(parts) != expected:
        raise TableTransactionError(
            message=f"The transaction answered {len(parts)} parts for {expected} operations",
            response=response,
        )
    return [{"etag": etag} if (etag := p.etag()) is not None else {} for p in parts]


def _too_large(response: Any) -> HttpResponseError:
    return _decode(
        response,
        error_message="The transaction request was too large",
        error_type=RequestTooLargeError,
    )


def _checked(error: HttpResponseError, table_name: str) -> HttpResponseError:
    # Raises the SDK's clearer error for a table name the service refused.
    _check_table_name(error, table_name)
    return error


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def _parts(body: bytes, content_type: str) -> list[_Part]:
    """The ``application/http`` parts of a multipart answer, change sets opened in place."""
    found = _BOUNDARY.search(content_type)
    if not found:
        return []
    delimiter = b"--" + found.group(1).encode()
    out: list[_Part] = []
    # Before the first delimiter is the preamble; after the closing "--" the epilogue.
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        split = _BLANK_LINE.split(chunk.lstrip(b"\r\n"), maxsplit=1)
        inner = split[1] if len(split) > 1 else b""
        kind = _content_type(split[0].decode("latin-1").splitlines())
        if kind.lower().startswith("multipart/mixed"):
            out += _parts(inner, kind)
        else:
            out.append(_http_part(inner))
    return out


def _http_part(raw: bytes) -> _Part:
    split = _BLANK_LINE.split(raw, maxsplit=1)
    head, body = split[0], split[1] if len(split) > 1 else b""
    lines = head.decode("latin-1").splitlines()
    status = lines[0].split(" ", 2) if lines else []
    code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 500
    reason = status[2] if len(status) > 2 else ""
    return _Part(code, reason, lines[1:], body.rstrip(b"\r\n"))


def _content_type(lines: list[str]) -> str:
    for line in lines:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "content-type":
            return value.strip()
    return ""


def _headers(lines: list[str]) -> CaseInsensitiveDict:
    headers = CaseInsensitiveDict()
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return headers
