#!/usr/bin/env python3
"""Open a sealed recording (SEALED-FORMAT.md) offline, with only `cryptography`: the checks
and the WAV of `telephony decrypt`, or nothing. Packet codecs need that command's decoders.
Usage: decrypt.py --key private.pem --in rec.sealed --out call.wav [--jwks keys.json]"""

import argparse
import base64
import hashlib
import json
import os
import struct
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CONTEXT = b"telephony recording data key v1\x00"
KEM = {"hpke-x25519": hpke.KEM.X25519, "hpke-mlkem768-x25519": hpke.KEM.MLKEM768_X25519}
WIDTH, TAG = {"mulaw": 1, "alaw": 1, "l16le": 2, "l16be": 2}, {"mulaw": 7, "alaw": 6}
Refused = type("Refused", (Exception,), {"__doc__": "A check failed; the text says which."})


def load_key(data: bytes) -> tuple[str, str, object]:  # algorithm, public fingerprint, key
    if b"-----BEGIN" in data:
        key = serialization.load_pem_private_key(data, password=None)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        name = "rsa-oaep-sha256" if isinstance(key, rsa.RSAPrivateKey) else "hpke-x25519"
        return name, hashlib.sha256(key.public_key().public_bytes(*spki)).hexdigest(), key
    raw = base64.b64decode(b"".join(data.split()))
    kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:64])
    dh = x25519.X25519PrivateKey.from_private_bytes(raw[64:96])
    public = kem.public_key().public_bytes_raw() + dh.public_key().public_bytes_raw()
    key = hpke.MLKEM768X25519PrivateKey(kem, dh)
    return "hpke-mlkem768-x25519", hashlib.sha256(public).hexdigest(), key


def unwrap(algorithm: str, key: object, wrapped: bytes, recording_id: str) -> bytes:
    context = CONTEXT + recording_id.encode()
    try:
        if algorithm == "rsa-oaep-sha256":
            oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), context)
            return key.decrypt(wrapped, oaep)
        suite = hpke.Suite(KEM[algorithm], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
        return suite.decrypt(wrapped, key, info=context)
    except (ValueError, InvalidTag):
        raise Refused("a wrapped data key does not open with this key") from None


def take(f, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise Refused(f"the container is truncated: it ends inside {what}")
    return bytes(data)


def read_header(f, jwks: dict | None) -> dict:
    magic, version, length = struct.unpack(">8sBI", take(f, 13, "its prefix"))
    if magic != b"TELSEAL\x00" or version != 1:
        raise Refused("not a sealed recording (its magic bytes are wrong)")
    body = take(f, length, "its header")
    (sig_length,) = struct.unpack(">H", take(f, 2, "its header"))
    protected, _, sig = take(f, sig_length, "its signature").decode().split(".")
    header, seal = json.loads(body), {"typ": "telephony-sealed+json", "alg": "EdDSA"}
    signer, payload = header["signer"], base64.urlsafe_b64encode(body).decode().rstrip("=")
    if json.loads(base64.urlsafe_b64decode(protected + "==")) != {**seal, "kid": signer["kid"]}:
        raise Refused("the container's signature is not the service's EdDSA JWS")
    raw_sig, x = (base64.urlsafe_b64decode(text + "==") for text in (sig, signer["x"]))
    try:
        public = ed25519.Ed25519PublicKey.from_public_bytes(x)
        public.verify(raw_sig, f"{protected}.{payload}".encode())
    except InvalidSignature:
        raise Refused("the container's header fails its signature") from None
    pinned = {(k.get("kid"), k.get("x")) for k in jwks["keys"]} if jwks else None
    if pinned is not None and (signer["kid"], signer["x"]) not in pinned:
        raise Refused(f"the signer {signer['kid']} is not in the JWKS given")
    return header


def chunks(f, header: dict, algorithm: str, key: object):
    rec, count, epochs = header["recording_id"], header["chunks"]["count"], header["epochs"]
    if count and min((e["first_chunk"] for e in epochs), default=1) != 0:
        raise Refused("the container has no key for its first chunk")
    ciphers = {}
    for i in range(count):
        epoch = max((e for e in epochs if e["first_chunk"] <= i), key=lambda e: e["epoch"])
        if epoch["epoch"] not in ciphers:
            data_key = unwrap(algorithm, key, base64.b64decode(epoch["wrapped_key"]), rec)
            ciphers[epoch["epoch"]] = AESGCM(data_key), base64.b64decode(epoch["nonce_prefix"])
        aead, prefix = ciphers[epoch["epoch"]]
        version, flags, index, length = struct.unpack(">BBII", take(f, 10, f"chunk {i} of {count}"))
        if version != 1 or flags & ~1 or length < 16 or index != i:
            raise Refused(f"chunk {i} is malformed or missing (chunk {index} stands in its place)")
        final, last = bool(flags & 1), i == count - 1
        if final != last and (final or header["status"] == "completed"):
            raise Refused(f"chunk {i}'s final flag is wrong: chunks were cut or spliced")
        body, more = take(f, length, f"chunk {i} of {count}"), b"final" if final else b"more"
        ad = b"\0".join([b"telephony/chunk/v1", rec.encode(), b"mix", str(i).encode(), more])
        try:
            yield aead.decrypt(prefix + struct.pack(">IB", i, final), body, ad)
        except InvalidTag:
            raise Refused(f"chunk {i} fails its authentication tag") from None
    if f.read(1):
        raise Refused("the container has bytes after its last chunk")


def wav_header(encoding: str, rate: int, channels: int, frames: int) -> bytes:
    width, tag = WIDTH[encoding], TAG.get(encoding, 1)
    block, size = width * channels, frames * width * channels
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, 8 * width)
    fmt, fact = (fmt, b"") if tag == 1 else (fmt + b"\0\0", b"fact" + struct.pack("<II", 4, frames))
    body = b"fmt " + struct.pack("<I", len(fmt)) + fmt + fact + b"data" + struct.pack("<I", size)
    return b"RIFF" + struct.pack("<I", 4 + len(body) + size) + b"WAVE" + body


def decrypt(key_path: str, source: str, out_path: str, jwks_path: str | None) -> dict:
    algorithm, fingerprint, key = load_key(Path(key_path).read_bytes())
    jwks = json.loads(Path(jwks_path).read_text()) if jwks_path else None
    with open(source, "rb") as f, open(out_path, "wb") as out:
        header = read_header(f, jwks)
        audio, sealed_to, tracks = header["audio"], header["key"], len(header["audio"]["tracks"])
        if sealed_to["fingerprint"] != fingerprint:
            raise Refused(f"the recording is sealed to key {sealed_to['id']}, not to --key")
        if audio["encoding"] not in WIDTH:
            raise Refused(f"{audio['encoding']} packets need a decoder: use telephony decrypt")
        out.write(wav_header(audio["encoding"], audio["sample_rate_hz"], tracks, audio["frames"]))
        for plain in chunks(f, header, algorithm, key):
            if audio["encoding"] == "l16be":  # WAV is little-endian
                samples = f"{len(plain) // 2}h"
                plain = struct.pack("<" + samples, *struct.unpack(">" + samples, plain))
            out.write(plain)
    return {"recording_id": header["recording_id"], "chunks": header["chunks"]["count"]}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--key", "--in", "--out", "--jwks"):
        p.add_argument(flag, required=flag != "--jwks")
    args = vars(p.parse_args())
    part = args["out"] + ".part"
    try:
        summary = decrypt(args["key"], args["in"], part, args["jwks"])
    except Exception as refused:  # a malformed header too: no half-written audio is left
        Path(part).unlink(missing_ok=True)
        sys.exit(f"decrypt.py: refused: {refused}")
    os.replace(part, args["out"])
    print(json.dumps({**summary, "out": args["out"]}))
