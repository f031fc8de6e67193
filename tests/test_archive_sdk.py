"""The archive poller's ctypes binding (:class:`NativeArchiveSource`) against WeCom's real
``libWeWorkFinanceSdk_C.so``, as far as it goes without WeCom's servers: the SDK is created,
initialised and destroyed, its documented error codes come back as :class:`ArchiveError`, and
``GetChatData`` goes through the configured proxy (here a closed local port, so nothing leaves
the machine). Successful decryption needs a real archive, so it is not covered.

The library comes from ``COHORTBOT_ARCHIVE_SDK`` (a path) or from the ``wecom-audit`` wheel
(``pip install 'cohortbot[archive-sdk]'``, Linux x86-64, Python 3.11); without it these tests skip.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bot.doors.archive_poller import (
    ArchiveError,
    NativeArchiveSource,
    bundled_sdk_path,
    native_source,
)

SDK = os.environ.get("COHORTBOT_ARCHIVE_SDK") or bundled_sdk_path()

pytestmark = pytest.mark.skipif(
    not SDK or not Path(SDK).is_file(),
    reason="libWeWorkFinanceSdk_C.so not found: pip install 'cohortbot[archive-sdk]' "
    "(Linux x86-64, Python 3.11) or set COHORTBOT_ARCHIVE_SDK to its path",
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def source(key: rsa.RSAPrivateKey, **kwargs: str) -> NativeArchiveSource:
    proxy = kwargs.pop("proxy", f"http://127.0.0.1:{closed_port()}")
    assert SDK is not None
    return native_source(SDK, "wwBOGUScorp0001", "bogus-secret", pem(key), proxy=proxy, **kwargs)


def test_init_with_an_empty_corp_id_is_refused_with_the_sdk_code() -> None:
    assert SDK is not None
    with pytest.raises(ArchiveError, match="Init failed with code 10000"):
        NativeArchiveSource(SDK, "", "", {})


def test_a_corp_id_is_accepted_offline_and_close_is_idempotent(rsa_key: rsa.RSAPrivateKey) -> None:
    # Init only records the credentials; WeCom checks them at the first GetChatData.
    src = source(rsa_key)
    src.close()
    src.close()


def test_the_bundled_library_is_used_when_no_path_is_configured(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    if bundled_sdk_path() is None:
        pytest.skip("wecom-audit is not installed (the library came from COHORTBOT_ARCHIVE_SDK)")
    native_source("", "wwBOGUScorp0001", "bogus-secret", pem(rsa_key)).close()


def test_get_chat_data_through_an_unreachable_proxy_is_a_network_error(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    src = source(rsa_key)
    try:
        with pytest.raises(ArchiveError, match="GetChatData failed with code 10001"):
            asyncio.run(src.fetch(0, 100))
    finally:
        src.close()


def test_more_than_1000_items_is_refused_before_any_network(rsa_key: rsa.RSAPrivateKey) -> None:
    src = source(rsa_key)
    try:
        with pytest.raises(ArchiveError, match="GetChatData failed with code 10000"):
            asyncio.run(src.fetch(0, 1001))
    finally:
        src.close()


def test_decrypt_item_reports_the_sdk_code_for_a_message_it_cannot_decrypt(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    random_key = base64.b64encode(
        rsa_key.public_key().encrypt(b"0123456789abcdef0123456789abcdef", padding.PKCS1v15())
    ).decode()
    item = {
        "seq": 7,
        "msgid": "m7",
        "publickey_ver": 1,
        "encrypt_random_key": random_key,
        "encrypt_chat_msg": base64.b64encode(b"not an archive message" * 4).decode(),
    }
    src = source(rsa_key)
    try:
        with pytest.raises(ArchiveError, match="DecryptData failed with code 100"):
            src.decrypt_item(item)
        # Shorter than 13 bytes would abort the whole process inside the SDK: refused first.
        with pytest.raises(ArchiveError, match="too short"):
            src.decrypt_item({**item, "encrypt_chat_msg": "abc"})
        # A key version we hold no private key for: skipped (logged), not an error.
        assert src.decrypt_item({**item, "publickey_ver": 2}) is None
    finally:
        src.close()
