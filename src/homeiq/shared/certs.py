"""When the certificate a TLS peer presents expires: read from the certificate itself (DER), so it is known
whether or not it was verified (`verify_ssl: false` still gets an expiry date)."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

UTC_TIME, GENERALIZED_TIME, EXPLICIT_VERSION = 0x17, 0x18, 0xA0


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """The DER element at `at`: its tag, where its content starts and where it ends."""
    tag, length, at = der[at], der[at + 1], at + 2
    if length & 0x80:
        size = length & 0x7F
        length, at = int.from_bytes(der[at:at + size], "big"), at + size
    return tag, at, at + length


def not_after(der: bytes) -> float:
    """The notAfter of a DER X.509 certificate, in Unix seconds (ValueError if it is not one)."""
    try:
        _, tbs, _ = _element(der, _element(der, 0)[1])  # Certificate → TBSCertificate
        tag, _, end = _element(der, tbs)
        at = end if tag == EXPLICIT_VERSION else tbs
        for _ in range(3):  # serialNumber, signature, issuer
            at = _element(der, at)[2]
        _, validity, _ = _element(der, at)
        tag, start, end = _element(der, _element(der, validity)[2])  # notBefore → notAfter
        text = der[start:end].decode("ascii")
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a DER certificate: {exc}") from exc
    if tag not in (UTC_TIME, GENERALIZED_TIME):
        raise ValueError(f"not a DER certificate: notAfter has tag {tag:#x}")
    when = datetime.strptime(text, "%y%m%d%H%M%SZ" if tag == UTC_TIME else "%Y%m%d%H%M%SZ")
    return when.replace(tzinfo=UTC).timestamp()


def peer_expiry(ssl_object: object) -> float | None:
    """The expiry of the certificate an `ssl.SSLObject` (a transport's "ssl_object") was shown; None without TLS."""
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return not_after(der) if der else None
