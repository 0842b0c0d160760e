"""Recordings sealed to a customer's key, issue 14 parts 2 to 4 (API.md "Customer-held
keys", SEALED-FORMAT.md, R3): activation, sealing, the container and its refusals,
rotation, and the proof that nothing the service keeps opens a chunk."""

from __future__ import annotations

import ast
import asyncio
import base64
import itertools
import json
import os
import struct
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage import outbox
from storage.keys.crypto import CHUNK_HEADER
from storage.keys.hierarchy import MasterKeys, account_key
from storage.keys.sealed import (
    PREFIX,
    SIGNATURE_LENGTH,
    ContainerRefused,
    load_private_key,
)
from telephony.cli.decrypt import decrypt
from telephony.domain.errors import IntegrityFailure
from telephony.settings import Settings, master_keys
from telephony.usecases.export import export_account
from telephony.web.appkeys import BLOBS, KEYS, POOL
from tests.conftest import Customer, consented_call, new_customer
from tests.support.media import connect, writer_of
from tests.support.portal import sign_in
from tests.support.recordings import FRAMES, expected, frame, record, status_is
from tests.support.sealed import Pair, make_pair, opened, seal_to, sealed_download
from tests.support.waiting import eventually

ALGORITHMS = ("hpke-x25519", "hpke-mlkem768-x25519", "rsa-oaep-sha256")


def interleaved(frames: int = FRAMES) -> bytes:
    """The dual μ-law recording `record` makes, as stored: inbound, outbound, sample by sample."""
    inbound, outbound = expected("inbound", frames), expected("outbound", frames)
    out = bytearray(2 * len(inbound))
    out[0::2], out[1::2] = inbound, outbound
    return bytes(out)


def split(container: bytes) -> tuple[bytes, dict[str, Any], list[bytes]]:
    """(prefix, header, each chunk record) of a container, read by hand as SEALED-FORMAT.md
    lays it out: what an attacker who edits one has to work with."""
    _, _, length = PREFIX.unpack_from(container)
    body_end = PREFIX.size + length
    (sig_length,) = SIGNATURE_LENGTH.unpack_from(container, body_end)
    records_at = body_end + SIGNATURE_LENGTH.size + sig_length
    header = json.loads(container[PREFIX.size : body_end])
    records, at = [], records_at
    while at < len(container):
        _, _, _, size = CHUNK_HEADER.unpack_from(container, at)
        records.append(container[at : at + CHUNK_HEADER.size + size])
        at += CHUNK_HEADER.size + size
    return container[:records_at], header, records


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).write_bytes(data)


def started(header: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(header["started_at"])


def refusal(container: bytes, pair: Pair) -> str:
    with pytest.raises(ContainerRefused) as refused:
        opened(container, pair)
    return str(refused.value)


# -- activation -------------------------------------------------------------------------------


async def test_activating_a_key_makes_it_the_one_active_key_and_tells_staff(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    first = await seal_to(client, owner, make_pair())
    second = await seal_to(client, owner, make_pair())
    listed = (await (await client.get("/v1/encryption-keys", headers=owner.auth)).json())["items"]
    assert {k["id"]: k["active"] for k in listed} == {first: False, second: True}
    again = await client.post(f"/v1/encryption-keys/{second}/activate", headers=owner.auth)
    assert again.status == 200 and (await again.json())["active"] is True
    async with pool.acquire() as conn:
        notes = [n.event for n in await outbox.list_all(conn)]
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'encryption_key.activated'"
        )
    assert notes.count("encryption_key.activated") == 3
    assert audited == 3

    other = await new_customer(client)
    foreign = await client.post(f"/v1/encryption-keys/{second}/activate", headers=other.auth)
    assert foreign.status == 404
    await client.delete(f"/v1/encryption-keys/{first}", headers=owner.auth)
    deleted = await client.post(f"/v1/encryption-keys/{first}/activate", headers=owner.auth)
    assert deleted.status == 404


async def test_an_account_without_an_activated_key_records_under_the_service_keys(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """Registering is not using: the download stays WAV until a key is activated."""
    resp = await client.post(
        "/v1/encryption-keys",
        json={"algorithm": "hpke-x25519", "public_key": make_pair().public},
        headers=owner.auth,
    )
    assert resp.status == 201
    recording_id = await record(client, owner, pool, frames=60)
    got = await (await client.get(f"/v1/recordings/{recording_id}", headers=owner.auth)).json()
    assert got["encryption_key_id"] is None
    audio = await client.get(f"/v1/recordings/{recording_id}/audio", headers=owner.auth)
    assert audio.content_type == "audio/wav"


# -- sealing and the container ----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_a_sealed_recording_downloads_as_a_container_only_its_key_opens(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, algorithm: str
) -> None:
    pair = make_pair(algorithm)
    key_id = await seal_to(client, owner, pair)
    recording_id = await record(client, owner, pool)
    got = await (await client.get(f"/v1/recordings/{recording_id}", headers=owner.auth)).json()
    assert got["encryption_key_id"] == key_id

    container = await sealed_download(client, owner, recording_id)
    header, audio = opened(container, pair)
    assert audio == interleaved()
    assert header["recording_id"] == recording_id and header["status"] == "completed"
    assert header["key"] == {
        "id": key_id,
        "algorithm": algorithm,
        "fingerprint": load_private_key(pair.private).fingerprint,
    }
    assert header["audio"]["frames"] == FRAMES * 160
    assert [t["name"] for t in header["audio"]["tracks"]] == ["inbound", "outbound"]
    assert len(header["epochs"]) == 1 and header["epochs"][0]["first_chunk"] == 0
    assert header["coverage"]["segments"][0]["ended_by"] == "stream_ended"

    stranger = make_pair(algorithm)
    assert "is sealed to key" in refusal(container, stranger)


async def test_the_container_streams_with_range_and_a_strong_etag(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    await seal_to(client, owner, make_pair())
    recording_id = await record(client, owner, pool)
    whole = await client.get(f"/v1/recordings/{recording_id}/audio", headers=owner.auth)
    body = await whole.read()
    etag = whole.headers["ETag"]
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["Cache-Control"] == "private, no-cache"
    assert int(whole.headers["Content-Length"]) == len(body)
    prefix_bytes = len(split(body)[0])
    cuts = [0, 7, prefix_bytes - 3, prefix_bytes + 5, len(body) // 2, len(body)]
    pieces = []
    for start, end in itertools.pairwise(cuts):
        resp = await client.get(
            f"/v1/recordings/{recording_id}/audio",
            headers={**owner.auth, "Range": f"bytes={start}-{end - 1}", "If-Range": etag},
        )
        assert resp.status == 206, await resp.text()
        assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(body)}"
        pieces.append(await resp.read())
    assert b"".join(pieces) == body
    unchanged = await client.get(
        f"/v1/recordings/{recording_id}/audio", headers={**owner.auth, "If-None-Match": etag}
    )
    assert unchanged.status == 304
    async with pool.acquire() as conn:
        encodings = await conn.fetch(
            "SELECT details ->> 'encoding' AS e FROM audit_events"
            " WHERE action = 'recording.downloaded'"
        )
    assert {r["e"] for r in encodings} == {"sealed"}
    other = await new_customer(client)  # R4: only through the owning account
    foreign = await client.get(f"/v1/recordings/{recording_id}/audio", headers=other.auth)
    assert foreign.status == 404


async def test_the_cli_writes_the_wav_and_refuses_to_leave_half_a_file(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    pair = make_pair()
    await seal_to(client, owner, pair)
    recording_id = await record(client, owner, pool)
    container = await sealed_download(client, owner, recording_id)
    jwks = await (await client.get("/.well-known/telephony-keys.json")).read()
    await asyncio.to_thread(
        write_files,
        tmp_path,
        {"key.pem": pair.private, "call.sealed": container, "jwks.json": jwks},
    )
    summary = await asyncio.to_thread(
        decrypt,
        tmp_path / "key.pem",
        tmp_path / "call.sealed",
        tmp_path / "call.wav",
        tmp_path / "jwks.json",
    )
    assert summary["recording_id"] == recording_id and summary["signer_pinned"] is True
    wav = await asyncio.to_thread((tmp_path / "call.wav").read_bytes)
    fmt_tag, channels, rate = struct.unpack_from("<HHI", wav, 20)
    assert (fmt_tag, channels, rate) == (7, 2, 8000)  # μ-law as it was stored, both tracks
    assert wav.endswith(interleaved()) and wav[wav.index(b"data") + 8 :] == interleaved()

    damaged = bytearray(container)
    damaged[-40] ^= 0x01
    await asyncio.to_thread(write_files, tmp_path, {"damaged.sealed": bytes(damaged)})
    with pytest.raises(ContainerRefused, match="authentication tag"):
        await asyncio.to_thread(
            decrypt, tmp_path / "key.pem", tmp_path / "damaged.sealed", tmp_path / "bad.wav", None
        )
    left = await asyncio.to_thread(lambda: [p.name for p in tmp_path.iterdir()])
    assert not [name for name in left if name.startswith("bad")]
    await asyncio.to_thread(write_files, tmp_path, {"other-jwks.json": b'{"keys": []}'})
    with pytest.raises(ContainerRefused, match="not in the JWKS"):
        await asyncio.to_thread(
            decrypt,
            tmp_path / "key.pem",
            tmp_path / "call.sealed",
            tmp_path / "again.wav",
            tmp_path / "other-jwks.json",
        )


# -- bad containers (a test each) -------------------------------------------------------------


@pytest.fixture
async def sealed_pair(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> tuple[Pair, bytes, bytes]:
    """A key and two containers sealed to it: two recordings of the same account."""
    pair = make_pair()
    await seal_to(client, owner, pair)
    first = await record(client, owner, pool)
    second = await record(client, owner, pool)
    return (
        pair,
        await sealed_download(client, owner, first),
        await sealed_download(client, owner, second),
    )


async def test_one_flipped_bit_in_a_chunk_is_refused(
    sealed_pair: tuple[Pair, bytes, bytes],
) -> None:
    pair, container, _ = sealed_pair
    prefix, _, records = split(container)
    at = len(prefix) + len(records[0]) + CHUNK_HEADER.size + 10
    damaged = bytearray(container)
    damaged[at] ^= 0x10
    assert refusal(bytes(damaged), pair) == "chunk 1 fails its authentication tag"


async def test_one_flipped_bit_in_the_header_is_refused(
    sealed_pair: tuple[Pair, bytes, bytes],
) -> None:
    pair, container, _ = sealed_pair
    at = container.index(b'"status":"completed"') + len(b'"status":"')
    damaged = bytearray(container)
    damaged[at] ^= 0x20  # one bit: "completed" becomes "Completed", still valid JSON
    assert refusal(bytes(damaged), pair) == "the container's header fails its signature"


async def test_a_dropped_chunk_is_refused(sealed_pair: tuple[Pair, bytes, bytes]) -> None:
    pair, container, _ = sealed_pair
    prefix, _, records = split(container)
    dropped = prefix + b"".join(records[:1] + records[2:])
    assert refusal(dropped, pair) == "chunk 1 is missing: chunk 2 stands in its place"


async def test_reordered_chunks_are_refused(sealed_pair: tuple[Pair, bytes, bytes]) -> None:
    pair, container, _ = sealed_pair
    prefix, _, records = split(container)
    swapped = prefix + b"".join([records[0], records[2], records[1], *records[3:]])
    assert refusal(swapped, pair) == "chunk 1 is missing: chunk 2 stands in its place"


async def test_a_chunk_from_another_recording_is_refused(
    sealed_pair: tuple[Pair, bytes, bytes],
) -> None:
    """Same key, same index, same size: only the recording id in the AD tells them apart."""
    pair, container, other = sealed_pair
    prefix, _, records = split(container)
    _, _, foreign = split(other)
    assert len(foreign[1]) == len(records[1])
    spliced = prefix + b"".join([records[0], foreign[1], *records[2:]])
    assert refusal(spliced, pair) == "chunk 1 fails its authentication tag"


async def test_a_truncated_container_is_refused(sealed_pair: tuple[Pair, bytes, bytes]) -> None:
    pair, container, _ = sealed_pair
    prefix, _, records = split(container)
    whole_chunks = prefix + b"".join(records[:-1])
    assert refusal(whole_chunks, pair).startswith("the container is truncated: it ends inside")
    assert refusal(container[:-7], pair).startswith("the container is truncated")
    assert refusal(container[: len(prefix) - 9], pair).startswith("the container is truncated")
    assert refusal(container + b"\0", pair) == "the container has bytes after its last chunk"
    assert refusal(b"", pair).startswith("the container is truncated")
    assert refusal(b"RIFF" + container[4:], pair).startswith("not a sealed recording")


# -- what the service keeps -------------------------------------------------------------------


async def _every_stored_value(pool: asyncpg.Pool) -> list[bytes]:
    """Every bytea and text value of every row of every table the service has."""
    values: list[bytes] = []
    async with pool.acquire() as conn:
        columns = await conn.fetch(
            """SELECT table_name, column_name, data_type FROM information_schema.columns
               WHERE table_schema = 'public' AND data_type IN ('bytea', 'text', 'jsonb')"""
        )
        for col in columns:
            rows = await conn.fetch(
                f'SELECT "{col["column_name"]}"::text AS v, "{col["column_name"]}" AS raw'  # noqa: S608
                f' FROM "{col["table_name"]}" WHERE "{col["column_name"]}" IS NOT NULL'
            )
            for row in rows:
                raw = row["raw"]
                values.append(bytes(raw) if isinstance(raw, bytes) else str(row["v"]).encode())
    return values


def _files_under(*roots: Path) -> list[bytes]:
    """Every file's bytes; the database's own files too when this process may read them
    (the suite's private cluster: its WAL and heap, where a key sent in a query would be)."""
    readable = [root for root in roots if os.access(root, os.R_OK)]
    return [p.read_bytes() for root in readable for p in root.rglob("*") if p.is_file()]


async def test_nothing_the_service_keeps_opens_a_chunk(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings
) -> None:
    """R3: after the call, collect every key, row and file the service holds; the data key
    is in none of them, and no key among them opens the recording's first chunk."""
    pair = make_pair()
    await seal_to(client, owner, pair)
    recording_id = await record(client, owner, pool)
    container = await sealed_download(client, owner, recording_id)
    _, header, records = split(container)
    epoch = header["epochs"][0]
    data_key = load_private_key(pair.private).unwrap(
        base64.b64decode(epoch["wrapped_key"]), recording_id
    )
    nonce = base64.b64decode(epoch["nonce_prefix"]) + struct.pack(">IB", 0, 0)
    ad = b"\0".join([b"telephony/chunk/v1", recording_id.encode(), b"mix", b"0", b"more"])
    first = records[0][CHUNK_HEADER.size :]
    assert AESGCM(data_key).decrypt(nonce, first, ad)  # the customer's key does open it

    async with pool.acquire() as conn:
        await conn.execute("CHECKPOINT")
        data_dir = Path(await conn.fetchval("SHOW data_directory"))
        accounts = [r["id"] for r in await conn.fetch("SELECT id FROM accounts")]
    master: MasterKeys = master_keys(settings)
    keys = [master.current, *master.previous]
    async with pool.acquire() as conn:
        keys += [await account_key(conn, master, a, started(header)) for a in accounts]
    rows = await _every_stored_value(pool)
    files = await asyncio.to_thread(_files_under, settings.data_dir, data_dir)
    held = rows + files
    # The collection is real: it holds the epoch's wrapped key and the stored chunks.
    assert base64.b64decode(epoch["wrapped_key"]) in rows
    assert any(first in f for f in files)

    assert not [v for v in held if data_key in v], "the plaintext data key is at rest"
    candidates = keys + [v for v in rows if len(v) == 32]
    assert len(candidates) >= 2
    for candidate in candidates:
        with pytest.raises(InvalidTag):
            AESGCM(candidate).decrypt(nonce, first, ad)
    with pytest.raises(IntegrityFailure):
        async with pool.acquire() as conn:
            await client.app[KEYS].recording_key(
                conn, owner.account_id, recording_id, None, started(header)
            )


# -- rotation and refusals at the start -------------------------------------------------------


async def test_rotation_seals_new_recordings_to_the_new_key_and_old_ones_keep_theirs(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    old, new = make_pair(), make_pair("hpke-mlkem768-x25519")
    old_id = await seal_to(client, owner, old)
    before = await record(client, owner, pool, frames=60)
    new_id = await seal_to(client, owner, new)
    after = await record(client, owner, pool, frames=60)
    await client.delete(f"/v1/encryption-keys/{old_id}", headers=owner.auth)  # retired

    first = await sealed_download(client, owner, before)
    second = await sealed_download(client, owner, after)
    assert opened(first, old)[1] == interleaved(60)
    assert opened(second, new)[1] == interleaved(60)
    assert f"sealed to key {new_id}" in refusal(second, old)
    assert f"sealed to key {old_id}" in refusal(first, new)


async def test_with_the_active_key_deleted_a_start_is_refused_never_sealed_otherwise(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    key_id = await seal_to(client, owner, make_pair())
    await client.delete(f"/v1/encryption-keys/{key_id}", headers=owner.auth)
    call = await consented_call(client, owner)
    resp = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=owner.auth)
    assert resp.status == 409
    problem = await resp.json()
    assert problem["code"] == "customer-key-required"
    assert "activate" in problem["detail"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM recordings") == 0


async def test_an_unusable_active_key_refuses_the_start(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """A key row altered at rest (an X25519 key that no longer parses) is not used, and the
    service's own key is not used instead."""
    key_id = await seal_to(client, owner, make_pair())
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE customer_keys SET public_key = '\\x3000'::bytea WHERE id = $1", key_id
        )
    call = await consented_call(client, owner)
    resp = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=owner.auth)
    assert resp.status == 409
    assert (await resp.json())["code"] == "customer-key-required"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM recordings") == 0


async def test_deleting_a_sealed_recording_destroys_its_wrapped_keys_too(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    await seal_to(client, owner, make_pair())
    recording_id = await record(client, owner, pool, frames=60)
    resp = await client.delete(f"/v1/recordings/{recording_id}", headers=owner.auth)
    assert resp.status == 204
    async with pool.acquire() as conn:
        epochs = await conn.fetchval(
            "SELECT count(*) FROM recording_key_epochs WHERE recording_id = $1", recording_id
        )
    assert epochs == 0
    receipt = await client.get(
        f"/v1/recordings/{recording_id}/deletion-receipt", headers=owner.auth
    )
    assert receipt.status == 200
    assert (await receipt.json())["receipt"]["key_destroyed"] is True
    gone = await client.get(f"/v1/recordings/{recording_id}/audio", headers=owner.auth)
    assert gone.status == 404


# -- the standalone decryptor -----------------------------------------------------------------

TOOL = Path(__file__).resolve().parents[2] / "tools" / "decrypt.py"


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_standalone_decryptor_needs_only_cryptography_in_under_150_lines() -> None:
    source = TOOL.read_text()
    assert len(source.splitlines()) < 150
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - sys.stdlib_module_names == {"cryptography"}


async def test_the_standalone_decryptor_writes_what_the_cli_writes_and_refuses_what_it_refuses(
    sealed_pair: tuple[Pair, bytes, bytes], tmp_path: Path
) -> None:
    pair, container, other = sealed_pair
    prefix, _, records = split(container)
    _, _, foreign = split(other)
    flipped = bytearray(container)
    flipped[-30] ^= 0x04
    bad = {
        "flipped.sealed": bytes(flipped),
        "dropped.sealed": prefix + b"".join(records[:1] + records[2:]),
        "spliced.sealed": prefix + b"".join([records[0], foreign[1], *records[2:]]),
        "truncated.sealed": prefix + b"".join(records[:-1]),
    }
    await asyncio.to_thread(
        write_files, tmp_path, {"key.pem": pair.private, "rec.sealed": container, **bad}
    )
    key = str(tmp_path / "key.pem")

    def both(source: str, name: str) -> list[subprocess.CompletedProcess[str]]:
        given = ["--key", key, "--in", str(tmp_path / source)]
        return [
            _run(["-m", "telephony", "decrypt", *given, "--out", str(tmp_path / f"cli-{name}")]),
            _run([str(TOOL), *given, "--out", str(tmp_path / f"tool-{name}")]),
        ]

    cli, tool = await asyncio.to_thread(both, "rec.sealed", "call.wav")
    assert cli.returncode == 0, cli.stderr
    assert tool.returncode == 0, tool.stderr
    written = await asyncio.to_thread(
        lambda: [(tmp_path / n).read_bytes() for n in ("cli-call.wav", "tool-call.wav")]
    )
    assert written[0] == written[1]
    assert written[0].endswith(interleaved())
    for name in bad:
        cli, tool = await asyncio.to_thread(both, name, f"{name}.wav")
        assert cli.returncode == 2 and "refused" in cli.stderr, (name, cli.stderr)
        assert tool.returncode == 1 and "refused" in tool.stderr, (name, tool.stderr)
    left = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.glob("*.wav*")))
    assert left == ["cli-call.wav", "tool-call.wav"]


# -- the portal and the export ----------------------------------------------------------------


async def test_the_portal_shows_a_sealed_recording_with_its_key_and_no_player(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    pair = make_pair()
    key_id = await seal_to(client, owner, pair)
    recording_id = await record(client, owner, pool, frames=60)
    assert (await sign_in(client, owner.email)).status == 303  # to the start page
    page = await (await client.get(f"/recordings/{recording_id}")).text()
    assert key_id in page and load_private_key(pair.private).fingerprint[:16] in page
    assert "<audio" not in page and "format=mp3" not in page
    assert f"--in {recording_id}.sealed" in page
    download = await client.get(f"/recordings/{recording_id}/audio")
    assert download.content_type == "application/vnd.telephony.sealed+octet-stream"
    assert opened(await download.read(), pair)[1] == interleaved(60)


async def test_the_account_export_holds_the_sealed_container(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    pair = make_pair()
    await seal_to(client, owner, pair)
    recording_id = await record(client, owner, pool, frames=60)
    app = client.app
    out = tmp_path / "export.zip"
    result = await export_account(
        app[POOL], app[BLOBS], app[KEYS], owner.account_id, out, datetime.now(UTC)
    )
    assert result.recordings == 1 and result.damaged == []

    def read() -> tuple[dict[str, Any], bytes]:
        with zipfile.ZipFile(out) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            return manifest, archive.read(f"recordings/{recording_id}.sealed")

    manifest, container = await asyncio.to_thread(read)
    assert manifest["recordings"][0]["file"] == f"recordings/{recording_id}.sealed"
    assert opened(container, pair)[1] == interleaved(60)


async def test_a_start_that_races_the_stream_s_attach_opens_one_writer_and_one_epoch(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """The stream's `start` and the recording's start arriving together: the attach and the
    START message both see the live recording, and only one may open a writer. Two writers
    would seal the same chunk indexes under two keys, and the container would not open."""
    pair = make_pair()
    await seal_to(client, owner, pair)
    made = []
    for _ in range(20):
        call = await consented_call(client, owner)
        peer = await connect(client, call)
        _, resp = await asyncio.gather(
            peer.start(("inbound",)),
            client.post(
                f"/v1/calls/{call['id']}/recordings", json={"channels": "mono"}, headers=owner.auth
            ),
        )
        assert resp.status == 201, await resp.text()
        made.append(((await resp.json())["id"], call["id"], peer))
    for _, call_id, peer in made:
        await eventually(lambda c=call_id: writer_of(client, c) is not None)  # type: ignore[misc]
        for i in range(20):
            await peer.media(frame(i, "inbound"), "inbound")
        await peer.stop()
    for recording_id, _, _ in made:
        await eventually(lambda r=recording_id: status_is(pool, r, "completed"))  # type: ignore[misc]
    async with pool.acquire() as conn:
        epochs = await conn.fetch(
            "SELECT recording_id, count(*) AS n FROM recording_key_epochs GROUP BY recording_id"
        )
    assert {r["recording_id"]: r["n"] for r in epochs} == {r: 1 for r, _, _ in made}
    for recording_id, _, _ in made:
        container = await sealed_download(client, owner, recording_id)
        assert opened(container, pair)[1] == expected("inbound", 20)
