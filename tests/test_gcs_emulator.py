"""The GCS emulator against GCS's documented JSON API behaviour, and TF's GCS client against it.

The first tests speak HTTP to an emulator in this process (plain HTTP on an ephemeral loopback
port: the semantics, not the TLS, are under test). The last ones run TensorFlow's own GCS client
inside the private namespace (gcs_harness), over TLS, as the product does.
"""
import http.client
import json
import socket
import threading
import urllib.parse

import pytest

from gcs_harness import gcs, gcs_namespace  # noqa: F401  # pylint: disable=unused-import
from tests.gcs import emulator

B = "bkt"


@pytest.fixture
def api():
  store, faults = emulator.Store(), emulator.Faults()
  store.create_bucket(B)
  server = emulator.make_server(("127.0.0.1", 0), store=store, faults=faults)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  port = server.server_address[1]

  def call(method, path, body=b"", headers=None, host="www.googleapis.com"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
      conn.request(method, path, body=body, headers=dict(headers or {}, Host=host))
      r = conn.getresponse()
      data = r.read()
      return r.status, dict(r.getheaders()), data
    finally:
      conn.close()

  call.store, call.faults, call.port = store, faults, port
  yield call
  server.shutdown()
  server.server_close()


def q(name):
  return urllib.parse.quote(name, safe="")


def put(api, name, data, **params):
  query = urllib.parse.urlencode({"uploadType": "media", "name": name, **params})
  return api("POST", f"/upload/storage/v1/b/{B}/o?{query}", data)


def test_list_folds_names_after_the_delimiter_into_prefixes(api):
  for name in ("a/1", "a/b/2", "a/b/3", "a/c", "a/", "b"):
    assert put(api, name, b"x")[0] == 200
  status, _, body = api("GET", f"/storage/v1/b/{B}/o?prefix=a%2F&delimiter=%2F")
  listing = json.loads(body)
  assert status == 200
  assert [i["name"] for i in listing["items"]] == ["a/", "a/1", "a/c"]
  assert listing["prefixes"] == ["a/b/"]
  status, _, body = api("GET", f"/storage/v1/b/{B}/o")
  assert [i["name"] for i in json.loads(body)["items"]] == ["a/", "a/1", "a/b/2", "a/b/3",
                                                             "a/c", "b"]


def test_list_pages_count_items_and_prefixes_and_cover_everything_once(api):
  for name in ("a/1", "a/b/2", "a/b/3", "a/c", "a/d/4", "a/e"):
    put(api, name, b"x")
  seen, token, pages = [], None, 0
  while True:
    path = f"/storage/v1/b/{B}/o?prefix=a%2F&delimiter=%2F&maxResults=2"
    if token:
      path += "&pageToken=" + q(token)
    listing = json.loads(api("GET", path)[2])
    page = [i["name"] for i in listing.get("items", [])] + listing.get("prefixes", [])
    assert len(page) <= 2
    seen += page
    pages += 1
    token = listing.get("nextPageToken")
    if not token:
      break
  assert sorted(seen) == ["a/1", "a/b/", "a/c", "a/d/", "a/e"]
  assert pages == 3


def test_media_download_honours_ranges(api):
  put(api, "f", b"0123456789")
  status, headers, body = api("GET", f"/{B}/f", headers={"Range": "bytes=2-5"},
                              host="storage.googleapis.com")
  assert (status, body, headers["Content-Range"]) == (206, b"2345", "bytes 2-5/10")
  status, _, body = api("GET", f"/{B}/f", headers={"Range": "bytes=8-100"},
                        host="storage.googleapis.com")
  assert (status, body) == (206, b"89")
  status, _, _ = api("GET", f"/{B}/f", headers={"Range": "bytes=10-20"},
                     host="storage.googleapis.com")
  assert status == 416
  status, _, body = api("GET", f"/storage/v1/b/{B}/o/f?alt=media")
  assert (status, body) == (200, b"0123456789")
  assert api("GET", f"/{B}/missing", host="storage.googleapis.com")[0] == 404


def test_resumable_upload_appears_only_when_complete_and_reports_progress(api):
  status, headers, _ = api("POST", f"/upload/storage/v1/b/{B}/o?uploadType=resumable&name=" +
                           q("d/obj"), headers={"Content-Length": "0"})
  assert status == 200
  session = urllib.parse.urlsplit(headers["Location"])
  assert headers["Location"].startswith("https://www.googleapis.com/upload/storage/v1/")
  path = session.path + "?" + session.query
  status, headers, _ = api("PUT", path, b"0123", {"Content-Range": "bytes 0-3/*"})
  assert (status, headers["Range"]) == (308, "bytes=0-3")
  assert api("GET", f"/storage/v1/b/{B}/o/{q('d/obj')}")[0] == 404  # Not visible yet.
  status, headers, _ = api("PUT", path, b"", {"Content-Range": "bytes */10"})
  assert (status, headers["Range"]) == (308, "bytes=0-3")
  status, _, body = api("PUT", path, b"456789", {"Content-Range": "bytes 4-9/10"})
  assert status == 200 and json.loads(body)["size"] == "10"
  generation = json.loads(body)["generation"]
  status, _, body = api("PUT", path, b"456789", {"Content-Range": "bytes 4-9/10"})  # A retry.
  assert status == 200 and json.loads(body)["generation"] == generation
  meta = json.loads(api("GET", f"/storage/v1/b/{B}/o/{q('d/obj')}")[2])
  assert (meta["name"], meta["size"], meta["generation"]) == ("d/obj", "10", generation)
  assert api.store.stats()["uploaded"][f"{B}/d/obj"] == 16  # Every body byte, retry included.


def test_chunked_body_is_stored_without_its_framing_even_with_content_length(api):
  conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
  conn.putrequest("POST", f"/upload/storage/v1/b/{B}/o?uploadType=media&name=c")
  conn.putheader("Transfer-Encoding", "chunked")
  conn.putheader("Content-Length", "8")
  conn.endheaders()
  conn.send(b"3\r\nhi \r\n5\r\nthere\r\n0\r\n\r\n")
  assert conn.getresponse().status == 200
  conn.close()
  assert api.store.get(B, "c").data == b"hi there"


def test_generation_preconditions_delete_and_rewrite(api):
  first = json.loads(put(api, "g", b"one")[2])
  assert put(api, "g", b"two", ifGenerationMatch="0")[0] == 412  # Exists already.
  assert put(api, "g", b"two", ifGenerationMatch=first["generation"])[0] == 200
  assert api.store.get(B, "g").data == b"two"
  status, _, body = api("POST", f"/storage/v1/b/{B}/o/g/rewriteTo/b/{B}/o/{q('h/g')}")
  rewrite = json.loads(body)
  assert status == 200 and rewrite["done"] is True
  assert rewrite["resource"]["generation"] != first["generation"]
  assert api.store.get(B, "h/g").data == b"two"
  assert api("DELETE", f"/storage/v1/b/{B}/o/g")[0] == 204
  assert api("DELETE", f"/storage/v1/b/{B}/o/g")[0] == 404
  assert api("GET", f"/storage/v1/b/{B}/o/g")[0] == 404
  assert api("GET", "/storage/v1/b/nope")[0] == 404
  assert api("GET", f"/storage/v1/b/{B}")[0] == 200


def test_faults_answer_503_or_drop_the_connection_then_stop_at_the_limit(api):
  put(api, "f", b"x")
  api.faults.configure({"rate": 1.0, "mode": "503", "limit": 1})
  assert api("GET", f"/storage/v1/b/{B}/o/f")[0] == 503
  assert api("GET", f"/storage/v1/b/{B}/o/f")[0] == 200
  api.faults.configure({"rate": 1.0, "mode": "drop", "kinds": ["metadata"]})
  with pytest.raises((http.client.RemoteDisconnected, ConnectionError, socket.timeout)):
    api("GET", f"/storage/v1/b/{B}/o/f")
  assert api("GET", f"/{B}/f", host="storage.googleapis.com")[0] == 200  # Not a listed kind.
  assert api.store.stats()["faults_injected"] == 2


TF_CLIENT_CHECKS = r"""
import json, tensorflow as tf
g = tf.io.gfile
root = "gs://vae-test/client"
out = {"bucket": g.exists("gs://vae-test/"), "missing": g.exists(root + "/none")}
g.makedirs(root + "/d/e")
data = bytes(range(256)) * 12000  # 3 MB.
with g.GFile(root + "/d/big.bin", "wb") as f:
  f.write(data)
with g.GFile(root + "/d/big.bin", "rb") as f:
  f.seek(2_000_000)
  out["seek_read"] = f.read(4) == data[2_000_000:2_000_004]
out["size"] = g.stat(root + "/d/big.bin").length
with g.GFile(root + "/d/x.txt", "w") as f:
  f.write("hi there")
out["read"] = g.GFile(root + "/d/x.txt").read()
out["listdir"] = sorted(g.listdir(root + "/d"))
out["glob"] = sorted(g.glob(root + "/d/*.txt"))
g.rename(root + "/d/x.txt", root + "/y.txt", overwrite=True)
out["after_rename"] = sorted(g.listdir(root)), g.exists(root + "/d/x.txt")
try:
  g.rename(root + "/y.txt", root + "/d/big.bin", overwrite=False)
except tf.errors.AlreadyExistsError:
  out["rename_no_overwrite"] = "refused"
out["isdir"] = g.isdir(root + "/d/e"), g.isdir(root + "/y.txt")
g.rmtree(root + "/d")
out["after_rmtree"] = g.exists(root + "/d"), sorted(g.listdir(root))
print(json.dumps(out))
"""


def test_tensorflow_gcs_client_works_against_the_emulator(gcs):
  out = json.loads(gcs.python(TF_CLIENT_CHECKS).strip().splitlines()[-1])
  assert out["bucket"] is True and out["missing"] is False
  assert out["seek_read"] and out["size"] == 3_072_000
  assert out["read"] == "hi there"
  assert out["listdir"] == ["big.bin", "e/", "x.txt"]
  assert out["glob"] == ["gs://vae-test/client/d/x.txt"]
  assert out["after_rename"] == [["d/", "y.txt"], False]
  assert out["rename_no_overwrite"] == "refused"
  assert out["isdir"] == [True, False]
  assert out["after_rmtree"] == [False, ["y.txt"]]
  assert gcs.read("vae-test", "client/y.txt") == b"hi there"
  uploaded = gcs.stats()["uploaded"]
  assert uploaded["vae-test/client/d/big.bin"] == 3_072_000


def test_tensorflow_retries_503s_and_dropped_connections(gcs):
  gcs.set_faults(rate=0.3, mode="mix", seed=1, limit=4)  # Backoff doubles: keep it short.
  out = gcs.python(r"""
import tensorflow as tf
for i in range(8):
  with tf.io.gfile.GFile(f"gs://vae-test/flaky/{i}.txt", "w") as f:
    f.write(str(i) * 100)
print(sorted(tf.io.gfile.listdir("gs://vae-test/flaky")))
print(tf.io.gfile.GFile("gs://vae-test/flaky/7.txt").read()[:3])
""", timeout=240, GCS_RETRY_CONFIG_INIT_DELAY_TIME_US="50000")  # TF's backoff, from 50 ms.
  assert out.split("\n")[-2] == "777"
  assert len(gcs.list("vae-test", "flaky/")) == 8
  assert gcs.stats()["faults_injected"] > 0


def test_one_dropped_listing_fails_tensorflows_rmtree_but_not_fileio_rmtree(gcs):
  # TF's rmtree first lists `<dir>/` (maxResults=1) to see a directory; one dropped connection
  # there and it raises NotFoundError "doesn't exist or not a directory", the tree untouched.
  for d in ("plain", "ours"):
    for j in range(3):
      gcs.write("vae-test", f"rm/{d}/state/f{j}", b"x")
  gcs.set_faults(rate=1.0, mode="drop", kinds=["list"], limit=2)  # The first listing of each.
  out = gcs.python(r"""
import json, tensorflow as tf
from vae_dist import fileio
out = {}
try:
  tf.io.gfile.rmtree("gs://vae-test/rm/plain")
  out["plain"] = "removed"
except tf.errors.NotFoundError as e:
  out["plain"] = "NotFoundError"
fileio.rmtree("gs://vae-test/rm/ours")
out["ours"] = "removed"
print(json.dumps(out))
""")
  assert json.loads(out.strip().splitlines()[-1]) == {"plain": "NotFoundError", "ours": "removed"}
  assert gcs.stats()["faults_injected"] == 2
  assert len(gcs.list("vae-test", "rm/plain/")) == 3  # TF gave up without deleting anything.
  assert gcs.list("vae-test", "rm/ours/") == {}
