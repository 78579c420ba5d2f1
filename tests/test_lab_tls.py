"""TLS to the broker: a missing CA file is one line naming it; a client certificate is presented
to a mosquitto that requires one (its common name is then the broker user)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import bench
from tests.labkit import Mosquitto, need_mosquitto


def test_a_missing_ca_file_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.crt"
    out = bench("lab", "status", "--broker", "mqtts://127.0.0.1:1", env={"BENCH_MQTT_CA": str(missing)})
    assert out.rc == 2, out
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in out.err, out.err
    # A client certificate without its key (or a missing one) is refused the same way.
    cert = tmp_path / "client.crt"
    out = bench("lab", "status", "--broker", "mqtts://127.0.0.1:1", env={"BENCH_MQTT_CERT": str(cert)})
    assert out.rc == 2 and len(out.err.strip().splitlines()) == 1 and str(cert) in out.err, out.err


def _write_pki(folder: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate for 'operator'."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def save(stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        (folder / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test-lab-ca"))
        .issuer_name(name("test-lab-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    save("ca", ca_key, ca)

    def leaf(stem: str, cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        save(stem, key, builder.sign(ca_key, hashes.SHA256()))

    leaf(
        "server",
        "127.0.0.1",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    leaf("client", "operator", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return {n: folder / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


@pytest.fixture(name="tls_broker")
def tls_broker_fixture(tmp_path: Path) -> Iterator[tuple[Mosquitto, dict[str, Path]]]:
    need_mosquitto()
    pki = tmp_path / "pki"
    pki.mkdir()
    files = _write_pki(pki)
    m = Mosquitto(tmp_path / "broker")
    m.dir.mkdir()
    m.passwords = False  # the client certificate is the credential
    m.listener_lines = [
        f"cafile {files['ca.crt']}",
        f"certfile {files['server.crt']}",
        f"keyfile {files['server.key']}",
        "require_certificate true",
        "use_identity_as_username true",
    ]
    m.start()
    try:
        yield m, files
    finally:
        m.stop()


def test_a_client_certificate_is_presented_to_a_broker_that_requires_one(
    tls_broker: tuple[Mosquitto, dict[str, Path]],
) -> None:
    m, files = tls_broker
    url = f"mqtts://127.0.0.1:{m.port}"
    env = {
        "BENCH_MQTT_CA": str(files["ca.crt"]),
        "BENCH_MQTT_CERT": str(files["client.crt"]),
        "BENCH_MQTT_KEY": str(files["client.key"]),
    }
    out = bench("lab", "status", "--broker", url, env=env)
    assert out.rc == 0, out.err
    assert out.out.startswith("BENCH"), out.out
    # Without the certificate the broker refuses the connection: one line, exit code 3.
    out = bench("lab", "status", "--broker", url, env={"BENCH_MQTT_CA": str(files["ca.crt"])})
    assert out.rc == 3 and len(out.err.strip().splitlines()) == 1, out.err
