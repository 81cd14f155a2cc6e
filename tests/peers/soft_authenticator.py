"""A software WebAuthn authenticator and client for the passkey tests (issue #19).

It plays the browser (WebAuthn L3 §5: the client data, the PublicKeyCredential JSON as
`toJSON()` and templates/static/passkey.js post it) and the authenticator (§6: authenticatorData
as CTAP2 lays it out, attested credential data, COSE keys per RFC 9053; §8.2 `packed` self or
basic (x5c) attestation and §8.7 `none`), with knobs that break one rule at a time for the
hostile corpus. It can also be a vendor: `make_ca` returns a root that signs basic attestation
certificates (§8.2.1), as a hardware key maker's does.

One request per run: JSON on stdin, JSON on stdout.

  {"op": "make_ca"}  ->  {"cert_pem": "...", "key_pem": "..."}   # a self-signed P-256 root

  {"op": "create" | "get",
   "origin": "http://localhost:1234",          # what the client writes as the origin
   "options": {"publicKey": {...}},           # the options the broker put in the page
   "key": {...},                              # get: the credential state a create returned
   "alg": -7 | -8 | -257 | -65535,            # create: the key's COSE algorithm (default: the
                                              #   first of pubKeyCredParams this one supports)
   "attestation": "none" | "packed",          # create: the statement format (default none)
   "attestation_ca": {"cert_pem", "key_pem"}, # create, packed: basic attestation, the leaf
                                              #   certificate issued by this root (else self)
   "aaguid": "cb69481e-...",                  # create: the model's AAGUID (default: this one's)
   "backup_eligible": true,                   # create: BE and BS set (a synced passkey); kept
                                              #   in the key state for its assertions
   "counter": 5,                              # the signature counter to report (default: the
                                              #   key's next one; 0 keeps none)
   "tamper": {                                # each one breaks one rule
     "rp_id": "evil.example",                 # authenticatorData's rpIdHash is of another id
     "challenge": "b64url",                   # the client data carries another challenge
     "type": "webauthn.get",                  # the client data's type
     "cross_origin": true, "top_origin": "https://evil.example",
     "uv": false, "up": false,                # flags
     "auth_data": true,                       # a byte of authenticatorData flipped after signing
     "client_data": true,                     # clientDataJSON changed after signing
     "other_key": true,                       # the signature (or attestation) by another key
     "att_sig": true,                         # packed: a statement signature over other bytes
     "unknown_credential": true,              # get: a fresh credential the RP never saw
     "ignore_allow": true                     # get: answer although allowCredentials lacks it
   }}

Out: {"credential": {...PublicKeyCredential JSON...}, "key": {...credential state...}}.
"""

import base64
import hashlib
import json
import os
import struct
import sys

import datetime

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

# COSE algorithms (RFC 9053, IANA COSE registry).
ES256 = -7
EDDSA = -8
RS256 = -257
RS1 = -65535
# An AAGUID for this authenticator (random, fixed): packed self attestation carries it.
AAGUID = bytes.fromhex("5f1c2b3a4d5e6f708192a3b4c5d6e7f8")

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_BE = 0x08
FLAG_BS = 0x10
FLAG_AT = 0x40
# §8.2.1: the extension a packed attestation certificate names its model's AAGUID in.
OID_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_private_key(alg):
    if alg == ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if alg == EDDSA:
        return ed25519.Ed25519PrivateKey.generate()
    if alg in (RS256, RS1):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise SystemExit(f"unsupported algorithm {alg}")


def load_private_key(state):
    return serialization.load_der_private_key(unb64u(state["private"]), password=None)


def dump_private_key(key):
    return b64u(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def cose_key(key, alg):
    """The credential public key as a COSE_Key (RFC 9053 §7), CTAP2 canonical key order."""
    public = key.public_key()
    if alg == ES256:
        numbers = public.public_numbers()
        return {
            1: 2,  # kty: EC2
            3: alg,
            -1: 1,  # crv: P-256
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }
    if alg == EDDSA:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {1: 1, 3: alg, -1: 6, -2: raw}  # kty: OKP, crv: Ed25519
    numbers = public.public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return {1: 3, 3: alg, -1: n, -2: e}  # kty: RSA


def sign(key, alg, data):
    """A WebAuthn signature (§6.5.6): ECDSA as ASN.1 DER, Ed25519 raw, RSA PKCS#1 v1.5."""
    if alg == ES256:
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if alg == EDDSA:
        return key.sign(data)
    digest = hashes.SHA1() if alg == RS1 else hashes.SHA256()
    return key.sign(data, padding.PKCS1v15(), digest)


def client_data(kind, challenge, origin, tamper):
    """The client data JSON (§5.8.1), serialised like browsers do (§5.8.1.1)."""
    data = {
        "type": tamper.get("type", kind),
        "challenge": tamper.get("challenge", challenge),
        "origin": origin,
        "crossOrigin": bool(tamper.get("cross_origin", False)),
    }
    if "top_origin" in tamper:
        data["topOrigin"] = tamper["top_origin"]
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def auth_data(rp_id, tamper, counter, attested=None, synced=False):
    """authenticatorData (§6.1): rpIdHash, flags, signCount, attested credential data."""
    flags = FLAG_BE | FLAG_BS if synced else 0
    if tamper.get("up", True):
        flags |= FLAG_UP
    if tamper.get("uv", True):
        flags |= FLAG_UV
    if attested is not None:
        flags |= FLAG_AT
    out = hashlib.sha256(tamper.get("rp_id", rp_id).encode("utf-8")).digest()
    out += bytes([flags]) + struct.pack(">I", counter)
    if attested is not None:
        out += attested
    return out


def flip(data, index):
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def tamper_client_data(raw):
    """Client data changed after it was hashed and signed: one more member, still valid JSON
    that every other check accepts."""
    return raw[:-1] + b',"other_keys_can_be_added_here":"tampered"}'


def name(cn, org="Concierge test keys"):
    return x509.Name(
        [
            x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "KR"),
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(x509.NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, cn),
        ]
    )


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def make_ca(_req):
    """A vendor's attestation root: self-signed, a CA, valid from yesterday for ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"Test Root {os.urandom(4).hex()}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return {"cert_pem": pem(cert), "key_pem": key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")}


def attestation_leaf(ca, aaguid):
    """A batch attestation key and its certificate from `ca` (§8.2.1: version 3, C/O/OU/CN,
    not a CA, the AAGUID extension not critical)."""
    root = x509.load_pem_x509_certificate(ca["cert_pem"].encode("ascii"))
    root_key = serialization.load_pem_private_key(ca["key_pem"].encode("ascii"), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("Test Key Attestation"))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.UnrecognizedExtension(OID_AAGUID, der_octets(aaguid)), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    return key, cert


def der_octets(data):
    """DER OCTET STRING of `data` (the AAGUID extension's value)."""
    return bytes([0x04, len(data)]) + data


def create(req):
    options = req["options"]["publicKey"]
    tamper = req.get("tamper", {})
    offered = [p["alg"] for p in options.get("pubKeyCredParams", [])]
    alg = req.get("alg")
    if alg is None:
        alg = next((a for a in offered if a in (ES256, EDDSA)), None)
        if alg is None:
            raise SystemExit(f"no supported algorithm offered: {offered}")
    rp_id = options["rp"]["id"]
    key = new_private_key(alg)
    cred_id = os.urandom(32)
    counter = req.get("counter", 0)
    aaguid = bytes.fromhex(req["aaguid"].replace("-", "")) if "aaguid" in req else AAGUID
    synced = bool(req.get("backup_eligible"))

    attested = aaguid + struct.pack(">H", len(cred_id)) + cred_id + cbor2.dumps(cose_key(key, alg))
    data = auth_data(rp_id, tamper, counter, attested, synced)
    cdj = client_data("webauthn.create", options["challenge"], req["origin"], tamper)

    fmt = req.get("attestation", "none")
    if fmt == "none":
        stmt = {}
    elif fmt == "packed" and "attestation_ca" in req:
        # §8.2 basic attestation: the batch key signs, its certificate (x5c) from the vendor.
        signed = data + hashlib.sha256(cdj).digest()
        batch_key, batch_cert = attestation_leaf(req["attestation_ca"], aaguid)
        stmt = {
            "alg": ES256,
            "sig": sign(batch_key, ES256, signed),
            "x5c": [batch_cert.public_bytes(serialization.Encoding.DER)],
        }
    elif fmt == "packed":
        # §8.2 self attestation: no x5c, the credential key signs authData || clientDataHash.
        signed = data + hashlib.sha256(cdj).digest()
        signer = new_private_key(alg) if tamper.get("other_key") else key
        if tamper.get("att_sig"):
            signed = b"not the attested bytes" + signed
        stmt = {"alg": alg, "sig": sign(signer, alg, signed)}
    else:
        raise SystemExit(f"unknown attestation format {fmt}")

    if tamper.get("auth_data"):
        data = flip(data, 37)  # a byte of the AAGUID: covered by a packed signature only
    if tamper.get("client_data"):
        cdj = tamper_client_data(cdj)
    att_obj = cbor2.dumps({"fmt": fmt, "attStmt": stmt, "authData": data})

    credential = {
        "id": b64u(cred_id),
        "rawId": b64u(cred_id),
        "type": "public-key",
        "extensions": {},
        "response": {
            "clientDataJSON": b64u(cdj),
            "attestationObject": b64u(att_obj),
            "transports": ["internal"],
        },
    }
    state = {
        "id": b64u(cred_id),
        "alg": alg,
        "private": dump_private_key(key),
        "counter": counter,
        "rp_id": rp_id,
        "user_handle": options["user"]["id"],
        "synced": synced,
    }
    return {"credential": credential, "key": state}


def get(req):
    options = req["options"]["publicKey"]
    tamper = req.get("tamper", {})
    state = dict(req["key"])
    if tamper.get("unknown_credential"):
        fresh = new_private_key(state["alg"])
        state.update(id=b64u(os.urandom(32)), private=dump_private_key(fresh), counter=0)
    allowed = [c["id"] for c in options.get("allowCredentials") or []]
    if allowed and state["id"] not in allowed and not tamper.get("ignore_allow"):
        raise SystemExit("no credential of this authenticator is allowed")
    if options.get("rpId", state["rp_id"]) != state["rp_id"]:
        raise SystemExit("the credential is of another relying party")
    alg = state["alg"]
    key = load_private_key(state)
    counter = req.get("counter")
    if counter is None:
        counter = state["counter"] + 1  # a counter-keeping authenticator (§6.1.1)
    state["counter"] = counter

    data = auth_data(options.get("rpId", state["rp_id"]), tamper, counter, None, state.get("synced", False))
    cdj = client_data("webauthn.get", options["challenge"], req["origin"], tamper)
    signer = new_private_key(alg) if tamper.get("other_key") else key
    signature = sign(signer, alg, data + hashlib.sha256(cdj).digest())
    if tamper.get("auth_data"):
        data = flip(data, 33)  # a byte of the signature counter
    if tamper.get("client_data"):
        cdj = tamper_client_data(cdj)

    credential = {
        "id": state["id"],
        "rawId": state["id"],
        "type": "public-key",
        "extensions": {},
        "response": {
            "clientDataJSON": b64u(cdj),
            "authenticatorData": b64u(data),
            "signature": b64u(signature),
            "userHandle": state.get("user_handle"),
        },
    }
    return {"credential": credential, "key": state}


def main():
    req = json.load(sys.stdin)
    ops = {"create": create, "get": get, "make_ca": make_ca}
    if req.get("op") not in ops:
        raise SystemExit(f"op must be one of {sorted(ops)}")
    json.dump(ops[req["op"]](req), sys.stdout)


if __name__ == "__main__":
    main()
