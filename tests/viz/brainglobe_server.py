"""A loopback stand-in for the servers brainglobe-atlasapi 2 downloads atlases from.

brainglobe 2 has no setting for its server: it asks ``http://www.google.com/`` (then other sites) whether the
internet is up, ``https://gin.g-node.org/`` whether its server is, then reads
``https://gin.g-node.org/brainglobe/atlases/raw/master/last_versions.conf`` and downloads
``.../<atlas>_v<version>.tar.gz``. It does so with ``requests``, which honours the standard proxy and
CA-bundle variables. So this module runs an HTTP proxy on 127.0.0.1 that answers those addresses itself:
plain HTTP directly, HTTPS by accepting the CONNECT tunnel and speaking TLS with a certificate for the
asked host, signed by a throw-away CA the test trusts through ``REQUESTS_CA_BUNDLE``. brainglobe's code runs
unchanged; only what sits across the network is faked.
"""

from __future__ import annotations

import datetime
import ssl
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

GIN_BASE = "/brainglobe/atlases/raw/master/"
HOSTS = ("gin.g-node.org", "www.google.com")


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for HOSTS signed by it: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loopback test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]), critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def atlas_archive(atlas_dir: Path, out: Path) -> Path:
    """``<name>_v<version>/`` as the .tar.gz brainglobe downloads (the folder at the archive's top)."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(atlas_dir, arcname=atlas_dir.name)
    return out


class AtlasServer:
    """The proxy; ``files`` maps a path under GIN_BASE to its bytes; ``requests`` lists (host, path) served."""

    def __init__(self, folder: Path, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str]] = []
        self.ca, cert, key = _certificates(folder)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert, key)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            host = ""

            def log_message(self, *args: object) -> None:
                pass

            def do_CONNECT(self) -> None:  # noqa: N802 (http.server's naming)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                tunnel = outer.tls.wrap_socket(self.connection, server_side=True)
                self.host = self.path.split(":")[0]
                self.connection = tunnel
                self.rfile = tunnel.makefile("rb")
                self.wfile = tunnel.makefile("wb")
                self.close_connection = False
                while not self.close_connection:
                    self.handle_one_request()

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                host = url.hostname or self.host
                outer.requests.append((host, url.path))
                body = None
                if host in HOSTS and url.path == "/":
                    body = b"<html>up</html>"
                elif host == "gin.g-node.org" and url.path.startswith(GIN_BASE):
                    body = outer.files.get(url.path[len(GIN_BASE):])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> AtlasServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
