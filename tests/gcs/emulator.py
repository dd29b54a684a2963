"""The subset of the GCS JSON API that TensorFlow's GCS client uses, served over HTTP(S).

Why our own and not an emulator from PyPI: the Go `fake-gcs-server` refuses TensorFlow's
metadata POSTs (`Transfer-Encoding: identity`, HTTP 501) and `gcp-storage-emulator` stores the
chunk framing of TensorFlow's upload PUTs inside the object and hands out http:// upload URLs.
The subset TensorFlow needs is small, and owning it lets the tests count uploaded bytes and inject
faults. Semantics follow GCS's documentation (https://cloud.google.com/storage/docs/json_api):

- objects are immutable blobs in a flat namespace; every write makes a new `generation`;
  `ifGenerationMatch` (0 = must not exist) on writes, deletes and rewrites answers 412;
- list: lexicographic order, `prefix`, `delimiter` (names with the delimiter after the prefix
  fold into `prefixes`), `maxResults` counting items and prefixes, opaque `nextPageToken`;
- media download with `Range: bytes=a-b` (206 + Content-Range; 416 past the end);
- resumable uploads: POST opens a session (Location header), PUTs carry `Content-Range:
  bytes a-b/total` (or `*/total` to ask for the status / finish), 308 + `Range` while incomplete,
  200 + the object when complete; the object appears only when the session completes;
- simple (`uploadType=media`) uploads, delete (204), `rewriteTo` / `copyTo` (a server-side copy).

Bodies sent with `Transfer-Encoding: chunked` (TensorFlow sends it together with Content-Length)
are de-chunked: chunked wins, as RFC 9112 section 6.3 says.
"""
import base64
import hashlib
import http.server
import json
import random
import socketserver
import ssl
import threading
import time
import urllib.parse
import uuid

_UPLOAD = "/upload/storage/v1/b/"
_JSON = "/storage/v1/b/"
_DOWNLOAD = "/download/storage/v1/b/"


def _rfc3339(t: float) -> str:
  return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


class GcsError(Exception):

  def __init__(self, code: int, message: str, reason: str = "invalid"):
    super().__init__(message)
    self.code, self.message, self.reason = code, message, reason


class _Object:
  __slots__ = ("data", "generation", "created", "content_type")

  def __init__(self, data: bytes, generation: int, content_type: str):
    self.data, self.generation, self.content_type = data, generation, content_type
    self.created = time.time()


class Store:
  """Buckets of objects in memory, upload sessions, and counters of what clients sent."""

  def __init__(self):
    self.lock = threading.Lock()
    self.buckets = {}  # name -> {object name -> _Object}
    self.sessions = {}  # upload id -> dict
    self._generation = int(time.time() * 1e6)
    self.reset_stats()

  def reset_stats(self):
    self.uploaded = {}  # "bucket/name" -> body bytes received by upload requests (retries too)
    self.writes = {}  # "bucket/name" -> writes completed (uploads, rewrites, copies)
    self.requests = {}  # request kind -> count
    self.faults_injected = 0
    self.delayed = 0
    self.write_order = []  # "bucket/name" of each completed write, in order.

  def stats(self) -> dict:
    with self.lock:
      return {"uploaded": dict(self.uploaded), "writes": dict(self.writes),
              "requests": dict(self.requests), "faults_injected": self.faults_injected,
              "delayed": self.delayed, "write_order": list(self.write_order),
              "uploaded_total": sum(self.uploaded.values())}

  def create_bucket(self, bucket: str):
    with self.lock:
      self.buckets.setdefault(bucket, {})

  def _bucket(self, bucket: str) -> dict:
    if bucket not in self.buckets:
      raise GcsError(404, f"The specified bucket does not exist: {bucket}", "notFound")
    return self.buckets[bucket]

  def resource(self, bucket: str, name: str, obj: _Object) -> dict:
    return {
        "kind": "storage#object", "id": f"{bucket}/{name}/{obj.generation}", "name": name,
        "bucket": bucket, "generation": str(obj.generation), "metageneration": "1",
        "contentType": obj.content_type, "size": str(len(obj.data)),
        "md5Hash": base64.b64encode(hashlib.md5(obj.data).digest()).decode(),
        "timeCreated": _rfc3339(obj.created), "updated": _rfc3339(obj.created),
    }

  def get(self, bucket: str, name: str) -> _Object:
    with self.lock:
      obj = self._bucket(bucket).get(name)
    if obj is None:
      raise GcsError(404, f"No such object: {bucket}/{name}", "notFound")
    return obj

  @staticmethod
  def _check_precondition(current, if_generation_match):
    if if_generation_match is None:
      return
    have = current.generation if current is not None else 0
    if int(if_generation_match) != have:
      raise GcsError(412, "At least one of the pre-conditions you specified did not hold.",
                     "conditionNotMet")

  def put(self, bucket: str, name: str, data: bytes, *, content_type="application/octet-stream",
          if_generation_match=None) -> dict:
    with self.lock:
      objects = self._bucket(bucket)
      self._check_precondition(objects.get(name), if_generation_match)
      self._generation += 1
      obj = _Object(bytes(data), self._generation, content_type)
      objects[name] = obj
      key = f"{bucket}/{name}"
      self.writes[key] = self.writes.get(key, 0) + 1
      self.write_order.append(key)
      return self.resource(bucket, name, obj)

  def delete(self, bucket: str, name: str, if_generation_match=None):
    with self.lock:
      objects = self._bucket(bucket)
      if name not in objects:
        raise GcsError(404, f"No such object: {bucket}/{name}", "notFound")
      self._check_precondition(objects[name], if_generation_match)
      del objects[name]

  def list(self, bucket: str, *, prefix="", delimiter="", max_results=1000, page_token=None):
    with self.lock:
      names = sorted(n for n in self._bucket(bucket) if n.startswith(prefix))
      objects = dict(self.buckets[bucket])
    entries = []  # (key, is_prefix), in order; a folded prefix sorts before its members.
    seen_prefixes = set()
    for name in names:
      rest = name[len(prefix):]
      cut = rest.find(delimiter) if delimiter else -1
      if cut >= 0:
        folded = prefix + rest[:cut + len(delimiter)]
        if folded not in seen_prefixes:
          seen_prefixes.add(folded)
          entries.append((folded, True))
      else:
        entries.append((name, False))
    if page_token:
      after = base64.urlsafe_b64decode(page_token.encode()).decode()
      entries = [e for e in entries if e[0] > after and not (e[1] is False and after in
                                                              seen_prefixes and
                                                              e[0].startswith(after))]
    page, rest = entries[:max_results], entries[max_results:]
    out = {"kind": "storage#objects"}
    items = [self.resource(bucket, k, objects[k]) for k, is_prefix in page if not is_prefix]
    prefixes = [k for k, is_prefix in page if is_prefix]
    if items:
      out["items"] = items
    if prefixes:
      out["prefixes"] = prefixes
    if rest:
      out["nextPageToken"] = base64.urlsafe_b64encode(page[-1][0].encode()).decode()
    return out

  def copy(self, src_bucket, src_name, dst_bucket, dst_name, if_generation_match=None) -> dict:
    src = self.get(src_bucket, src_name)
    return self.put(dst_bucket, dst_name, src.data, content_type=src.content_type,
                    if_generation_match=if_generation_match)

  def count_upload(self, bucket: str, name: str, nbytes: int):
    with self.lock:
      key = f"{bucket}/{name}"
      self.uploaded[key] = self.uploaded.get(key, 0) + nbytes


class Faults:
  """Answers a share of requests with 503 or drops the connection, as configured by a test.

  Config keys: rate (0..1), mode ("503", "drop" or "mix"), kinds (request kinds that may fail;
  empty = all), seed, limit (most faults to inject; None = no limit); and delay_match /
  delay_seconds: requests whose decoded path contains delay_match are held that long before they
  are answered (a save that hangs, for a test to kill the process mid-save).
  """

  def __init__(self):
    self.lock = threading.Lock()
    self.configure({})

  def configure(self, config: dict):
    with self.lock:
      self.rate = float(config.get("rate", 0.0))
      self.mode = config.get("mode", "503")
      self.kinds = set(config.get("kinds") or ())
      self.limit = config.get("limit")
      self.delay_match = config.get("delay_match")
      self.delay_seconds = float(config.get("delay_seconds", 0))
      self._random = random.Random(config.get("seed", 0))

  def delay(self, path: str) -> float:
    with self.lock:
      if self.delay_match and self.delay_match in urllib.parse.unquote(path):
        return self.delay_seconds
      return 0.0

  def pick(self, kind: str):
    """None, "503" or "drop" for this request."""
    with self.lock:
      if self.rate <= 0 or (self.kinds and kind not in self.kinds):
        return None
      if self.limit is not None and self.limit <= 0:
        return None
      if self._random.random() >= self.rate:
        return None
      if self.limit is not None:
        self.limit -= 1
      if self.mode == "mix":
        return self._random.choice(("503", "drop"))
      return self.mode


def _read_body(handler) -> bytes:
  """The request body; chunked framing is removed even when Content-Length is also sent."""
  encoding = handler.headers.get("Transfer-Encoding", "").lower()
  if "chunked" in encoding:
    out = bytearray()
    while True:
      size_line = handler.rfile.readline(65537)
      size = int(size_line.split(b";")[0].strip() or b"0", 16)
      if size == 0:
        while handler.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
          pass  # Trailers.
        return bytes(out)
      out += handler.rfile.read(size)
      handler.rfile.readline(3)  # The CRLF after the chunk.
  length = int(handler.headers.get("Content-Length") or 0)
  return handler.rfile.read(length) if length else b""


class GcsHandler(http.server.BaseHTTPRequestHandler):
  """One request to the JSON API (www.googleapis.com) or the media host (storage.googleapis.com)."""

  protocol_version = "HTTP/1.1"
  server_version = "vae-dist-gcs-emulator"
  store: Store = None
  faults: Faults = None
  request_log = None  # A list that collects (method, path, status) when set.

  def log_message(self, *args):  # Quiet: the tests read the counters instead.
    pass

  # ---- plumbing ---------------------------------------------------------------------------------

  def _send(self, code: int, body=b"", headers=None):
    if isinstance(body, (dict, list)):
      body = json.dumps(body).encode()
      headers = dict(headers or {}, **{"Content-Type": "application/json; charset=UTF-8"})
    self.send_response(code)
    for k, v in (headers or {}).items():
      self.send_header(k, v)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(body)
    if self.request_log is not None:
      self.request_log.append((self.command, self.path, code))

  def _error(self, e: GcsError):
    self._send(e.code, {"error": {"code": e.code, "message": e.message,
                                  "errors": [{"reason": e.reason, "message": e.message}]}})

  def _dispatch(self):
    body = _read_body(self)
    url = urllib.parse.urlsplit(self.path)
    query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
    route, args = self._route(url.path, query)
    with self.store.lock:
      self.store.requests[route] = self.store.requests.get(route, 0) + 1
    delay = self.faults.delay(self.path) if self.faults else 0.0
    if delay:
      with self.store.lock:
        self.store.delayed += 1
      time.sleep(delay)
    fault = self.faults.pick(route) if self.faults else None
    if fault:
      with self.store.lock:
        self.store.faults_injected += 1
      if fault == "drop":
        self.close_connection = True
        if self.request_log is not None:
          self.request_log.append((self.command, self.path, "dropped"))
        return
      self._send(503, {"error": {"code": 503, "message": "Injected: service unavailable"}})
      return
    try:
      getattr(self, "_" + route)(body, query, *args)
    except GcsError as e:
      self._error(e)
    except (ValueError, KeyError) as e:  # A request we cannot parse: say so, like GCS would.
      self._error(GcsError(400, f"Bad request: {e}"))

  def _route(self, path: str, query: dict):
    """(kind of request, its arguments) from the raw (still %-encoded) path."""
    q = urllib.parse.unquote
    host = self.headers.get("Host", "").split(":")[0]
    if path.startswith(_UPLOAD):
      bucket = q(path[len(_UPLOAD):].split("/")[0])
      if self.command == "PUT" or "upload_id" in query:
        return "upload_chunk", (bucket,)
      return "upload_start", (bucket,)
    if path.startswith(_DOWNLOAD):
      bucket, _, name = path[len(_DOWNLOAD):].partition("/o/")
      return "download", (q(bucket), q(name))
    if path.startswith(_JSON):
      rest = path[len(_JSON):]
      if rest.endswith("/storageLayout"):  # Asked by TF before renaming a "directory".
        return "storage_layout", (q(rest[:-len("/storageLayout")]),)
      bucket, sep, obj = rest.partition("/o")
      if not sep:
        return "bucket", (q(bucket),)
      if obj in ("", "/"):
        return "list", (q(bucket),)
      obj = obj[1:]
      for verb in ("rewriteTo", "copyTo"):
        marker = f"/{verb}/b/"
        if marker in obj:
          src, _, dst = obj.partition(marker)
          dst_bucket, _, dst_name = dst.partition("/o/")
          return ("rewrite" if verb == "rewriteTo" else "copy"), (
              q(bucket), q(src), q(dst_bucket), q(dst_name))
      if self.command == "DELETE":
        return "delete", (q(bucket), q(obj))
      if query.get("alt") == "media":
        return "download", (q(bucket), q(obj))
      return "metadata", (q(bucket), q(obj))
    if host.startswith("storage.") or host.endswith("storage.googleapis.com"):
      bucket, _, name = path.lstrip("/").partition("/")
      return "download", (q(bucket), q(name))
    return "unknown", ()

  do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = lambda self: self._dispatch()

  # ---- the API ----------------------------------------------------------------------------------

  def _unknown(self, body, query):
    self._send(404, {"error": {"code": 404, "message": f"Not found: {self.command} {self.path}"}})

  def _bucket(self, body, query, bucket):
    with self.store.lock:
      exists = bucket in self.store.buckets
    if not exists:
      raise GcsError(404, f"The specified bucket does not exist: {bucket}", "notFound")
    self._send(200, {"kind": "storage#bucket", "id": bucket, "name": bucket, "location": "US",
                     "storageClass": "STANDARD"})

  def _storage_layout(self, body, query, bucket):
    """A flat bucket (no hierarchical namespace): "directories" are only name prefixes."""
    with self.store.lock:
      self.store._bucket(bucket)  # pylint: disable=protected-access
    self._send(200, {"kind": "storage#storageLayout", "bucket": bucket, "location": "US",
                     "locationType": "multi-region",
                     "hierarchicalNamespace": {"enabled": False}})

  def _metadata(self, body, query, bucket, name):
    obj = self.store.get(bucket, name)
    self._send(200, self.store.resource(bucket, name, obj))

  def _list(self, body, query, bucket):
    self._send(200, self.store.list(
        bucket, prefix=query.get("prefix", ""), delimiter=query.get("delimiter", ""),
        max_results=int(query.get("maxResults") or 1000), page_token=query.get("pageToken")))

  def _download(self, body, query, bucket, name):
    data = self.store.get(bucket, name).data
    spec = self.headers.get("Range", "")
    if not spec.startswith("bytes="):
      self._send(200, data, {"Content-Type": "application/octet-stream"})
      return
    first, _, last = spec[len("bytes="):].partition("-")
    first = int(first)
    last = min(int(last) if last else len(data) - 1, len(data) - 1)
    if first >= len(data):
      self._send(416, {"error": {"code": 416, "message": "Requested range not satisfiable"}},
                 {"Content-Range": f"bytes */{len(data)}"})
      return
    self._send(206, data[first:last + 1], {"Content-Range": f"bytes {first}-{last}/{len(data)}",
                                           "Content-Type": "application/octet-stream"})

  def _delete(self, body, query, bucket, name):
    self.store.delete(bucket, name, query.get("ifGenerationMatch"))
    self._send(204)

  def _rewrite(self, body, query, src_bucket, src_name, dst_bucket, dst_name):
    resource = self.store.copy(src_bucket, src_name, dst_bucket, dst_name,
                               query.get("ifGenerationMatch"))
    self._send(200, {"kind": "storage#rewriteResponse", "totalBytesRewritten": resource["size"],
                     "objectSize": resource["size"], "done": True, "resource": resource})

  def _copy(self, body, query, src_bucket, src_name, dst_bucket, dst_name):
    self._send(200, self.store.copy(src_bucket, src_name, dst_bucket, dst_name,
                                    query.get("ifGenerationMatch")))

  def _upload_start(self, body, query, bucket):
    with self.store.lock:
      self.store._bucket(bucket)  # pylint: disable=protected-access
    kind = query.get("uploadType", "")
    name = query.get("name")
    if not name and kind == "resumable" and body.strip():
      name = json.loads(body).get("name")  # The object resource may carry the name.
    if not name:
      raise GcsError(400, "Required parameter: name", "required")
    if kind == "media":
      self.store.count_upload(bucket, name, len(body))
      self._send(200, self.store.put(bucket, name, body,
                                     if_generation_match=query.get("ifGenerationMatch")))
      return
    if kind != "resumable":
      raise GcsError(400, f"Unsupported uploadType: {kind!r}")
    upload_id = uuid.uuid4().hex
    with self.store.lock:
      self.store.sessions[upload_id] = {
          "bucket": bucket, "name": name, "data": bytearray(), "done": None,
          "if_generation_match": query.get("ifGenerationMatch")}
    host = self.headers.get("Host", "www.googleapis.com")
    location = (f"https://{host}{_UPLOAD}{urllib.parse.quote(bucket, safe='')}/o?"
                f"uploadType=resumable&name={urllib.parse.quote(name, safe='')}"
                f"&upload_id={upload_id}")
    self._send(200, b"", {"Location": location})

  def _upload_chunk(self, body, query, bucket):
    with self.store.lock:
      session = self.store.sessions.get(query.get("upload_id", ""))
    if session is None:
      raise GcsError(404, "No such upload session.", "notFound")
    self.store.count_upload(session["bucket"], session["name"], len(body))
    if session["done"] is not None:  # A retried final PUT: the same answer again.
      self._send(200, session["done"])
      return
    spec = self.headers.get("Content-Range", "")
    if not spec.startswith("bytes "):
      raise GcsError(400, f"Bad Content-Range: {spec!r}")
    span, _, total = spec[len("bytes "):].partition("/")
    data = session["data"]
    if span != "*":
      first = int(span.split("-")[0])
      if first > len(data):
        raise GcsError(400, f"Upload chunk starts at {first}, only {len(data)} bytes persisted.")
      del data[first:]
      data += body
    if total != "*" and len(data) == int(total):
      session["done"] = self.store.put(session["bucket"], session["name"], bytes(data),
                                       if_generation_match=session["if_generation_match"])
      self._send(200, session["done"])
      return
    headers = {"Range": f"bytes=0-{len(data) - 1}"} if data else {}
    self._send(308, b"", headers)


class TlsThreadingServer(http.server.ThreadingHTTPServer):
  """A threaded HTTP server; with `context`, each connection's TLS handshake runs in its thread."""

  daemon_threads = True
  allow_reuse_address = True
  context: ssl.SSLContext = None

  def finish_request(self, request, client_address):
    if self.context is not None:
      try:
        request = self.context.wrap_socket(request, server_side=True)
      except (ssl.SSLError, OSError):
        return
    super().finish_request(request, client_address)


def make_server(address, *, store: Store, faults: Faults, context=None, request_log=None):
  """A GCS emulator server on `address` (not yet serving) over `store`."""
  handler = type("BoundGcsHandler", (GcsHandler,),
                 {"store": store, "faults": faults, "request_log": request_log})
  server = TlsThreadingServer(address, handler)
  server.context = context
  return server


class ControlHandler(http.server.BaseHTTPRequestHandler):
  """The tests' side door (a Unix socket, reachable from outside the network namespace).

  GET /stats, POST /reset_stats, POST /faults (JSON config), POST /bucket?name=,
  GET /list?bucket=&prefix=, GET /object?bucket=&name=, PUT /object?bucket=&name= (body),
  GET /resolve?host= (where a name resolves inside the namespace), GET /log.
  """

  protocol_version = "HTTP/1.1"
  store: Store = None
  faults: Faults = None
  request_log = None

  def log_message(self, *args):
    pass

  def address_string(self):
    return "control"

  def _reply(self, code, body):
    if not isinstance(body, bytes):
      body = json.dumps(body).encode()
    self.send_response(code)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def _handle(self):
    import socket  # pylint: disable=g-import-not-at-top
    url = urllib.parse.urlsplit(self.path)
    query = dict(urllib.parse.parse_qsl(url.query))
    body = _read_body(self)
    try:
      if url.path == "/stats":
        self._reply(200, self.store.stats())
      elif url.path == "/reset_stats":
        with self.store.lock:
          self.store.reset_stats()
        self._reply(200, {})
      elif url.path == "/faults":
        self.faults.configure(json.loads(body or b"{}"))
        self._reply(200, {})
      elif url.path == "/bucket":
        self.store.create_bucket(query["name"])
        self._reply(200, {})
      elif url.path == "/list":
        with self.store.lock:
          objects = self.store.buckets.get(query["bucket"], {})
          names = {n: len(o.data) for n, o in objects.items()
                   if n.startswith(query.get("prefix", ""))}
        self._reply(200, names)
      elif url.path == "/object" and self.command == "GET":
        self._reply(200, self.store.get(query["bucket"], query["name"]).data)
      elif url.path == "/object" and self.command == "PUT":
        self._reply(200, self.store.put(query["bucket"], query["name"], body))
      elif url.path == "/resolve":
        self._reply(200, {"address": socket.gethostbyname(query["host"])})
      elif url.path == "/log":
        self._reply(200, list(self.request_log or []))
      else:
        self._reply(404, {"error": url.path})
    except GcsError as e:
      self._reply(e.code, {"error": e.message})

  do_GET = do_POST = do_PUT = lambda self: self._handle()


class UnixHttpServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
  daemon_threads = True


def make_control_server(path: str, *, store: Store, faults: Faults, request_log=None):
  handler = type("BoundControlHandler", (ControlHandler,),
                 {"store": store, "faults": faults, "request_log": request_log})
  return UnixHttpServer(path, handler)
