"""A test CA and the certificates of a TLS host and of its client, made with ``cryptography``
(for the tests of TLS hosts, and bench/remote_console.py)."""


def _certificate(subject: str, key, issuer=None, issuer_key=None, *, ca=False, usage=None, ip=None):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, key_encipherment=not ca, key_cert_sign=ca,
                                            crl_sign=ca, content_commitment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False),
                              critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if ip is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def make_pki() -> dict[str, str]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate it signed, and a
    stranger's CA, as PEM text."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID

    def key():
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def pem(item) -> str:
        if hasattr(item, "private_bytes"):
            return item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()).decode()
        return item.public_bytes(serialization.Encoding.PEM).decode()

    ca_key, server_key, client_key, other_key = key(), key(), key(), key()
    ca = _certificate("LIMEN test CA", ca_key, ca=True)
    server = _certificate("127.0.0.1", server_key, ca, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH, ip="127.0.0.1")
    client = _certificate("limen", client_key, ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return {"ca_cert": pem(ca), "server_cert": pem(server), "server_key": pem(server_key),
            "client_cert": pem(client), "client_key": pem(client_key),
            "other_ca": pem(_certificate("Another CA", other_key, ca=True))}


SERVER_FILES = {"cacert.pem": "ca_cert", "servercert.pem": "server_cert", "serverkey.pem": "server_key"}
CLIENT_FILES = {"cacert.pem": "ca_cert", "clientcert.pem": "client_cert", "clientkey.pem": "client_key"}


def write(pki: dict[str, str], folder, files: dict[str, str]) -> None:
    """Write ``files`` (SERVER_FILES: what scripts/second-host reads from DIR/pki; CLIENT_FILES:
    a libvirt pkipath) of ``pki`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, field in files.items():
        (folder / name).write_text(pki[field])
