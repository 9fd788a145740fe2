"""download_ravdess against a local HTTP server with Range support (the network is never touched)."""

from __future__ import annotations

import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from wav2emo.data import ravdess
from wav2emo.data.corpora import load_corpus
from wav2emo.data.errors import CorpusError
from wav2emo.data.ravdess import RAVDESS_URL, download_ravdess

ZIP_NAME = "Audio_Speech_Actors_01-24.zip"


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


class Server:
    """Serves ``payload`` at /<ZIP_NAME>; ``mode`` misbehaves on purpose: truncate, garbage, norange."""

    def __init__(self, payload: bytes) -> None:
        self.payload, self.mode, self.requests = payload, "ok", []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                outer.requests.append(dict(self.headers))
                if self.path != f"/{ZIP_NAME}":
                    self.send_error(404)
                    return
                body = outer.payload if outer.mode != "garbage" else b"x" * len(outer.payload)
                start = 0
                rng = self.headers.get("Range")
                if rng and outer.mode != "norange":
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if outer.mode == "truncate":  # promise everything, send half, hang up
                    chunk = chunk[: len(chunk) // 2]
                    self.close_connection = True
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{ZIP_NAME}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    payload = make_zip({f"Actor_01/file{i}.txt": bytes([i]) * 5000 for i in range(20)})
    srv = Server(payload)
    yield srv
    srv.close()


def test_url_points_at_the_zenodo_record():
    assert RAVDESS_URL.startswith("https://zenodo.org/records/1188976/files/Audio_Speech_Actors_01-24.zip")


def test_full_download(server, tmp_path):
    path = download_ravdess(tmp_path / "dl", url=server.url, timeout=5)
    assert path == tmp_path / "dl" / ZIP_NAME
    assert path.read_bytes() == server.payload
    assert not path.with_name(ZIP_NAME + ".part").exists()
    assert "Range" not in server.requests[0]
    # an existing complete zip is returned without asking the server again; force downloads again
    assert download_ravdess(tmp_path / "dl", url=server.url, timeout=5) == path and len(server.requests) == 1
    download_ravdess(tmp_path / "dl", url=server.url, timeout=5, force=True)
    assert len(server.requests) == 2 and path.read_bytes() == server.payload


def test_resume_from_a_partial_download(server, tmp_path):
    part = tmp_path / (ZIP_NAME + ".part")
    cut = len(server.payload) // 3
    part.write_bytes(server.payload[:cut])
    path = download_ravdess(tmp_path, url=server.url, timeout=5)
    assert server.requests[0]["Range"] == f"bytes={cut}-"
    assert path.read_bytes() == server.payload
    assert not part.exists()


def test_server_that_ignores_range_restarts_cleanly(server, tmp_path):
    server.mode = "norange"
    (tmp_path / (ZIP_NAME + ".part")).write_bytes(b"stale bytes of another file")
    path = download_ravdess(tmp_path, url=server.url, timeout=5)
    assert path.read_bytes() == server.payload


def test_oversized_partial_file_starts_over(server, tmp_path):
    (tmp_path / (ZIP_NAME + ".part")).write_bytes(b"z" * (len(server.payload) + 10))
    path = download_ravdess(tmp_path, url=server.url, timeout=5)
    assert path.read_bytes() == server.payload
    assert server.requests[-1].get("Range") is None


def test_truncated_download_is_kept_as_part_and_resumed(server, tmp_path):
    server.mode = "truncate"
    with pytest.raises(CorpusError, match=r"(incomplete|interrupted).*run again to resume"):
        download_ravdess(tmp_path, url=server.url, timeout=5)
    assert not (tmp_path / ZIP_NAME).exists()
    part = tmp_path / (ZIP_NAME + ".part")
    assert 0 < part.stat().st_size < len(server.payload)
    server.mode = "ok"
    assert download_ravdess(tmp_path, url=server.url, timeout=5).read_bytes() == server.payload


def test_corrupt_download_is_not_renamed_into_place(server, tmp_path):
    server.mode = "garbage"
    with pytest.raises(CorpusError, match="not a readable zip"):
        download_ravdess(tmp_path, url=server.url, timeout=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_http_error_and_unreachable_server_say_what_to_do(server, tmp_path):
    with pytest.raises(CorpusError, match=r"HTTP 404.*by hand from https://zenodo.org/records/1188976"):
        download_ravdess(tmp_path, url=server.url.replace(ZIP_NAME, "other.zip"), timeout=5)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CorpusError) as err:
        download_ravdess(tmp_path, url=f"http://127.0.0.1:{port}/{ZIP_NAME}", timeout=5)
    msg = str(err.value)
    assert "cannot reach the server" in msg
    assert "https://zenodo.org/records/1188976" in msg and "data.corpus.root=/path/to/" + ZIP_NAME in msg
    assert not (tmp_path / ZIP_NAME).exists()


def test_load_corpus_downloads_beside_root_and_extracts_into_it(synthetic_corpus, tmp_path, monkeypatch):
    clips = sorted(synthetic_corpus.rglob("*.flac"))[:4]
    payload = make_zip({c.relative_to(synthetic_corpus).as_posix(): c.read_bytes() for c in clips})
    srv = Server(payload)
    try:
        monkeypatch.setattr(ravdess, "RAVDESS_URL", srv.url)
        root = tmp_path / "data" / "ravdess"
        cfg = {"name": "ravdess", "root": str(root), "download": True, "require_complete": False}
        m = load_corpus(cfg, cache_dir=tmp_path / "cache")
    finally:
        srv.close()
    assert len(m) == 4 and sorted(m.clip_ids) == sorted(c.stem for c in clips)
    assert (tmp_path / "data" / ZIP_NAME).is_file()
    assert all(Path(c.path).is_relative_to(root) for c in m)
    assert load_corpus(cfg, cache_dir=tmp_path / "cache").content_hash() == m.content_hash()  # no server now


def test_complete_part_file_is_taken_when_nothing_is_left_to_fetch(server, tmp_path):
    """A run killed between the last byte and the rename: the server answers 416, the .part is whole."""
    (tmp_path / (ZIP_NAME + ".part")).write_bytes(server.payload)
    path = download_ravdess(tmp_path, url=server.url, timeout=5)
    assert path.read_bytes() == server.payload and len(server.requests) == 1


def test_unreachable_or_refusing_server_leaves_no_folder_behind(server, tmp_path):
    """The server is asked before anything is created; a failure removes the folders the call made."""
    dest = tmp_path / "new" / "data"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CorpusError, match="cannot reach the server"):
        download_ravdess(dest, url=f"http://127.0.0.1:{port}/{ZIP_NAME}", timeout=5)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CorpusError, match="HTTP 404"):
        download_ravdess(dest, url=server.url.replace(ZIP_NAME, "other.zip"), timeout=5)
    assert list(tmp_path.iterdir()) == []
    server.mode = "garbage"  # the folder was made for the body, then the body was no zip
    with pytest.raises(CorpusError, match="not a readable zip"):
        download_ravdess(dest, url=server.url, timeout=5)
    assert list(tmp_path.iterdir()) == []
    server.mode = "truncate"  # a partial download worth resuming keeps its folder
    with pytest.raises(CorpusError, match="run again to resume"):
        download_ravdess(dest, url=server.url, timeout=5)
    assert [p.name for p in dest.iterdir()] == [ZIP_NAME + ".part"]
    server.mode = "ok"
    assert download_ravdess(dest, url=server.url, timeout=5).read_bytes() == server.payload


def test_load_corpus_download_failure_leaves_the_data_folder_as_it_was(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(ravdess, "RAVDESS_URL", f"http://127.0.0.1:{port}/{ZIP_NAME}")
    root = tmp_path / "data" / "ravdess"
    cfg = {"name": "ravdess", "root": str(root), "default_root": str(root), "download": "auto"}
    with pytest.raises(CorpusError, match="cannot reach the server"):
        load_corpus(cfg, cache_dir=tmp_path / "cache")
    assert list(tmp_path.iterdir()) == []


def test_url_without_a_file_name_saves_under_the_zip_name(server, tmp_path):
    """A URL whose path ends in '..' must not make the target the parent folder."""
    with pytest.raises(CorpusError):
        download_ravdess(tmp_path / "dl", url=server.url.rsplit("/", 1)[0] + "/..", timeout=5)
    assert not (tmp_path / ZIP_NAME).exists() and list(tmp_path.iterdir()) == []
